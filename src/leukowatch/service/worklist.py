"""The worklist: new alerts from the lab feed, for the team that must act on them.

`GET /api/worklist` (read role) lists items, open ones by default, critical first and oldest first
within a level (the order a critical-value call list is worked through); `POST
/api/worklist/{id}/ack` (read role: the clinicians who work the list) records who acknowledged the
item and when, in the same store transaction as its audit row. `/worklist` is the signed-in page:
the same order, an "overdue" mark on open critical items older than the site's limit
(`LEUKOWATCH_WORKLIST_OVERDUE_MINUTES`, an operational setting, not a clinical threshold), one
click to the patient page, an Acknowledge button, and a `Refresh` header instead of a script (the
page has no inline script, so a strict Content-Security-Policy holds).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .audit import OK, Actor, insert
from .auth import audited, require_role
from .errors import ServiceError

router = APIRouter()

ENV_OVERDUE_MINUTES = "LEUKOWATCH_WORKLIST_OVERDUE_MINUTES"
DEFAULT_OVERDUE_MINUTES = 60
#: Seconds between the page's own reloads.
PAGE_REFRESH_S = 60
LEVELS: tuple[str, ...] = ("critical", "warning")
_COLUMNS = ("item_id", "patient_id", "level", "code", "message", "result_time", "received_at", "status",
            "acked_by", "acked_at")


def overdue_after() -> timedelta:
    """How long an open critical item may wait before it is shown as overdue (site setting)."""
    raw = os.environ.get(ENV_OVERDUE_MINUTES, "")
    try:
        minutes = float(raw) if raw.strip() else DEFAULT_OVERDUE_MINUTES
    except ValueError:
        minutes = DEFAULT_OVERDUE_MINUTES
    return timedelta(minutes=minutes)


def list_items(con: Any, level: str | None = None, status: str | None = "open", patient_id: str | None = None,
               limit: int = 500) -> list[dict[str, Any]]:
    """Worklist items, critical first, then oldest received first; filters are exact matches."""
    where, params = [], []
    for column, value in (("level", level), ("status", status), ("patient_id", patient_id)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = (f"SELECT {', '.join(_COLUMNS)} FROM worklist" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY CASE level WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, received_at, item_id"
           + " LIMIT ?")
    rows = con.execute(sql, [*params, limit]).fetchall()
    limit_age = datetime.now(UTC) - overdue_after()
    items = []
    for row in rows:
        item = {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in zip(_COLUMNS, row, strict=True)}
        item["overdue"] = item["status"] == "open" and item["level"] == "critical" and item["received_at"] < limit_age
        items.append(item)
    return items


def _json_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v)
            for k, v in item.items()}


def acknowledge(con: Any, item_id: int, actor: Actor, endpoint: str) -> dict[str, Any] | None:
    """Mark one item acknowledged by `actor` (once: a second acknowledgement keeps the first) and
    write its audit row, in the caller's transaction; None when there is no such item."""
    row = con.execute("SELECT patient_id, status FROM worklist WHERE item_id = ?", [item_id]).fetchone()
    if row is None:
        return None
    if row[1] == "open":
        con.execute("UPDATE worklist SET status = 'acknowledged', acked_by = ?, acked_at = ? WHERE item_id = ?",
                    [actor.name, datetime.now(UTC), item_id])
    insert(con, actor, "worklist.ack", endpoint, OK, row[0])
    found = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM worklist WHERE item_id = ?", [item_id]).fetchone()
    return dict(zip(_COLUMNS, found, strict=True)) if found else None


def _read(request: Request, fn: Any) -> Any:
    cur = request.app.state.store.cursor()
    try:
        return fn(cur)
    finally:
        cur.close()


@router.get("/api/worklist", tags=["worklist"])
def get_worklist(request: Request, _: Annotated[Actor, Depends(audited("read", "worklist.read"))],
                 level: Literal["critical", "warning"] | None = None,
                 status: Literal["open", "acknowledged", "all"] = "open",
                 patient: str | None = None) -> JSONResponse:
    """Worklist items (open by default), critical first, oldest first within a level; filter by
    level, status (open, acknowledged, all) and patient id."""
    items = _read(request, lambda con: list_items(con, level, None if status == "all" else status, patient))
    return JSONResponse([_json_item(i) for i in items], headers={"Cache-Control": "no-store"})


@router.post("/api/worklist/{item_id}/ack", tags=["worklist"])
async def ack_item(request: Request, item_id: int, actor: Annotated[Actor, Depends(require_role("read"))]) -> Response:
    """Acknowledge an item (who and when are recorded and audited). A browser form is sent back to
    the page; an API client gets the item as JSON."""
    writer = getattr(request.app.state, "writer", None) or request.app.state.store.writer
    item = await writer.run(lambda con: acknowledge(con, item_id, actor, "/api/worklist/{item_id}/ack"))
    if item is None:
        raise ServiceError(404, "item_id", "no such worklist item")
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return RedirectResponse("/worklist", status_code=303)
    return JSONResponse(_json_item(item), headers={"Cache-Control": "no-store"})


@router.get("/worklist", response_class=HTMLResponse, include_in_schema=False)
async def worklist_page(request: Request, _: Annotated[Actor, Depends(audited("read", "worklist.page", page=True))],
                        level: str | None = None) -> HTMLResponse:
    from .web import _page

    chosen = level if level in LEVELS else None
    items = await asyncio.to_thread(_read, request, lambda con: list_items(con, chosen))
    response = _page(request, "worklist.html", {
        "items": items, "level": chosen, "levels": LEVELS, "refresh_s": PAGE_REFRESH_S,
        "overdue_minutes": int(overdue_after().total_seconds() // 60)})
    response.headers["Refresh"] = str(PAGE_REFRESH_S)
    response.headers["Cache-Control"] = "no-store"
    return response
