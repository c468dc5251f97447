"""Notifications for new critical worklist items: a signed webhook and/or FHIR resources.

An outbox, not a fire-and-forget call: the judge writes one `notify_outbox` row per channel in the
same transaction that creates the item, and this notifier delivers the rows afterwards. A receiver
that is down costs retries (exponential backoff), never the notice: after the last try the row is
copied to `notify_dead_letter` (status 'dead'), where an operator finds it.

- Webhook (`--notify-url`): POST of the item as JSON with `X-Leukowatch-Timestamp` and
  `X-Leukowatch-Signature: sha256=<hex>`, the HMAC-SHA256 of "<timestamp>.<body>" under the shared
  secret `LEUKOWATCH_NOTIFY_SECRET` (the receiver recomputes it, and refuses old timestamps).
- FHIR (`--notify-fhir BASE`): a Flag (the alert on the person) and a Communication about it,
  each a conditional create (`If-None-Exist: identifier=...`) so a retry never makes a second one.
  The person is named by identifier (the lab's patient id), not by a server-side reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from ..model import InputError
from .background import Background

if TYPE_CHECKING:
    import duckdb

    from .judge import NewItem
    from .writer import StoreWriter

log = logging.getLogger("leukowatch.notify")

ENV_NOTIFY_SECRET = "LEUKOWATCH_NOTIFY_SECRET"
SIGNATURE_HEADER = "X-Leukowatch-Signature"
TIMESTAMP_HEADER = "X-Leukowatch-Timestamp"
#: Identifier system of the FHIR resources (value: the worklist item id).
IDENTIFIER_SYSTEM = "urn:leukowatch:worklist-item"
#: Code system of the alert codes in FHIR resources.
ALERT_SYSTEM = "urn:leukowatch:alert"
WEBHOOK, FHIR = "webhook", "fhir"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (what a receiver recomputes)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def item_payload(item: NewItem) -> dict[str, Any]:
    """The webhook body (and what the FHIR resources are built from)."""
    return {"event": "worklist.item", "item_id": item.item_id, "patient_id": item.patient_id, "code": item.code,
            "level": item.level, "message": item.message, "result_time": _iso(item.result_time),
            "received_at": _iso(item.received_at)}


def flag_resource(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Flag", "status": "active",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": str(p["item_id"])}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                  "code": "clinical", "display": "Clinical"}]}],
        "code": {"coding": [{"system": ALERT_SYSTEM, "code": p["code"]}], "text": p["message"]},
        "subject": {"identifier": {"value": p["patient_id"]}},
        "period": {"start": p["result_time"] or p["received_at"]},
    }


def communication_resource(p: dict[str, Any], flag_ref: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication", "status": "completed",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": str(p["item_id"])}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                  "code": "alert", "display": "Alert"}]}],
        "priority": "stat" if p["level"] == "critical" else "urgent",
        "subject": {"identifier": {"value": p["patient_id"]}},
        "about": [{"reference": flag_ref}],
        "sent": _iso(datetime.now(UTC)),
        "payload": [{"contentString": p["message"]}],
    }


def _created_id(response: httpx.Response) -> str:
    """The id of a created (or, for a conditional create, found) resource: body id, else Location."""
    try:
        rid = response.json().get("id")
    except ValueError:
        rid = None
    if rid:
        return str(rid)
    location = response.headers.get("Location", "")
    parts = location.split("/_history")[0].rstrip("/").split("/")
    if not parts or not parts[-1]:
        raise httpx.HTTPError("the FHIR server returned neither an id nor a Location")
    return parts[-1]


class Notifier(Background):
    """Writes outbox rows (`enqueue`, inside the judge's transaction) and delivers them."""

    name = "leukowatch-notify"

    def __init__(self, writer: StoreWriter, webhook_url: str | None = None, secret: bytes | None = None,
                 fhir_base: str | None = None, max_attempts: int = 8, base_delay_s: float = 2.0,
                 max_delay_s: float = 300.0, timeout_s: float = 5.0) -> None:
        if webhook_url and not secret:
            raise InputError(ENV_NOTIFY_SECRET, "--notify-url needs the shared HMAC secret in this variable")
        super().__init__()
        self.writer = writer
        self.webhook_url = webhook_url
        self.secret = secret or b""
        self.fhir_base = fhir_base.rstrip("/") if fhir_base else None
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s

    @classmethod
    def from_flags(cls, writer: StoreWriter, notify_url: str | None, notify_fhir: str | None) -> Notifier | None:
        """The notifier the CLI flags ask for (None without either); the secret comes from the environment."""
        if not notify_url and not notify_fhir:
            return None
        secret = os.environ.get(ENV_NOTIFY_SECRET, "").encode() or None
        return cls(writer, notify_url, secret, notify_fhir)

    def targets(self) -> list[tuple[str, str]]:
        out = []
        if self.webhook_url:
            out.append((WEBHOOK, self.webhook_url))
        if self.fhir_base:
            out.append((FHIR, self.fhir_base))
        return out

    def enqueue(self, con: duckdb.DuckDBPyConnection, items: list[NewItem]) -> None:
        """One outbox row per item and channel, in the caller's transaction."""
        now = datetime.now(UTC)
        for item in items:
            payload = json.dumps(item_payload(item))
            for channel, target in self.targets():
                con.execute("INSERT INTO notify_outbox (item_id, channel, target, payload, status, attempts, "
                            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)",
                            [item.item_id, channel, target, payload, now, now])

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                due, next_at = await self.writer.run(_due)
                for notice in due:
                    error = await self._deliver(client, notice)
                    await self.writer.run(lambda con, n=notice, e=error: self._record(con, n, e))
                if due:
                    continue
                wait = self.max_delay_s if next_at is None else max(0.0, (next_at - datetime.now(UTC)).total_seconds())
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _deliver(self, client: httpx.AsyncClient, notice: tuple[Any, ...]) -> str | None:
        """Send one notice; None when delivered, else the reason (no values, no patient ids)."""
        _, channel, target, payload, _ = notice
        try:
            if channel == WEBHOOK:
                await self._webhook(client, target, payload.encode())
            else:
                await self._fhir(client, target, json.loads(payload))
        except httpx.HTTPStatusError as exc:
            return f"HTTP {exc.response.status_code}"
        except httpx.HTTPError as exc:
            return exc.__class__.__name__
        return None

    async def _webhook(self, client: httpx.AsyncClient, url: str, body: bytes) -> None:
        stamp = str(int(time.time()))
        response = await client.post(url, content=body, headers={
            "Content-Type": "application/json", TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(self.secret, stamp, body)})
        response.raise_for_status()

    async def _fhir(self, client: httpx.AsyncClient, base: str, payload: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
                   "If-None-Exist": f"identifier={IDENTIFIER_SYSTEM}|{payload['item_id']}"}
        flag = await client.post(f"{base}/Flag", json=flag_resource(payload), headers=headers)
        flag.raise_for_status()
        communication = await client.post(
            f"{base}/Communication", json=communication_resource(payload, f"Flag/{_created_id(flag)}"),
            headers=headers)
        communication.raise_for_status()

    def _record(self, con: duckdb.DuckDBPyConnection, notice: tuple[Any, ...], error: str | None) -> None:
        notice_id, _, _, _, attempts = notice
        now = datetime.now(UTC)
        attempts += 1
        if error is None:
            con.execute("UPDATE notify_outbox SET status = 'sent', attempts = ?, sent_at = ? WHERE notice_id = ?",
                        [attempts, now, notice_id])
            return
        log.warning("notice %s: delivery failed (%s), try %d of %d", notice_id, error, attempts, self.max_attempts)
        if attempts >= self.max_attempts:
            con.execute("UPDATE notify_outbox SET status = 'dead', attempts = ?, last_error = ? WHERE notice_id = ?",
                        [attempts, error, notice_id])
            con.execute("INSERT INTO notify_dead_letter SELECT notice_id, item_id, channel, target, payload, "
                        "attempts, last_error, ? FROM notify_outbox WHERE notice_id = ?", [now, notice_id])
            return
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempts - 1))
        con.execute("UPDATE notify_outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE notice_id = ?",
                    [attempts, error, now + timedelta(seconds=delay), notice_id])


def _due(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], datetime | None]:
    """Pending notices due now (oldest first), and when the next one falls due."""
    now = datetime.now(UTC)
    due = con.execute("SELECT notice_id, channel, target, payload, attempts FROM notify_outbox "
                      "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY notice_id LIMIT 50", [now]).fetchall()
    row = con.execute("SELECT min(next_attempt_at) FROM notify_outbox WHERE status = 'pending'").fetchone()
    return [tuple(r) for r in due], (row[0] if row else None)
