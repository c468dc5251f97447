"""The access audit: who read or wrote which patient's stored data, through which endpoint, and how it ended.

One append-only table (`audit`, store migration 2); leukowatch never updates or deletes a row. A
row holds time, actor (token name or JWT `sub`), role, kind of credential, action, patient id,
endpoint (the route template, e.g. `/api/patients/{patient_id}/history`) and outcome. Never a value:
the audit is read by people who must not see results.

- `insert(con, actor, action, endpoint, outcome, patient_id=None)` inside a writer job (the same
  transaction as the write it describes);
- `record(writer, ...)` queues one row on the writer and returns its future (`await
  asyncio.wrap_future(...)` or ignore it: the queue keeps order);
- `query(con, patient=..., actor=..., since=..., until=...)` and `audit_event(row)` (FHIR R4
  AuditEvent) for `GET /api/audit` and `leukowatch audit`.
"""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import duckdb

if TYPE_CHECKING:
    from .writer import StoreWriter


class Actor(NamedTuple):
    """Who is asking: `name` (token name, JWT `sub`, "startup-link"), `role` ("read", "ingest",
    "admin", or "ingest+read" for a JWT granting both), `kind` ("token", "jwt", "session", "startup")."""

    name: str
    role: str
    kind: str


#: Outcomes a row may carry.
OK, DENIED, NOT_FOUND, REJECTED, ERROR = "ok", "denied", "not-found", "rejected", "error"

_COLUMNS = ("seq", "time", "actor", "role", "kind", "action", "patient_id", "endpoint", "outcome")


def insert(con: duckdb.DuckDBPyConnection, actor: Actor, action: str, endpoint: str, outcome: str,
           patient_id: str | None = None) -> None:
    """Append one row on `con` (call inside a writer job)."""
    con.execute("INSERT INTO audit (time, actor, role, kind, action, patient_id, endpoint, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [datetime.now(UTC), actor.name, actor.role, actor.kind, action, patient_id, endpoint, outcome])


def record(writer: StoreWriter, actor: Actor, action: str, endpoint: str, outcome: str,
           patient_id: str | None = None) -> concurrent.futures.Future[None]:
    """Queue one row on the store's writer (its own transaction); the future completes when stored."""
    return writer.submit(lambda con: insert(con, actor, action, endpoint, outcome, patient_id))


def query(con: duckdb.DuckDBPyConnection, patient: str | None = None, actor: str | None = None,
          since: datetime | None = None, until: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Rows oldest first, filtered by patient id, actor name and time window (inclusive)."""
    where, params = [], []
    for clause, value in (("patient_id = ?", patient), ("actor = ?", actor), ("time >= ?", since),
                          ("time <= ?", until)):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = con.execute(sql + " ORDER BY seq LIMIT ?", [*params, limit]).fetchall()
    return [dict(zip(_COLUMNS, row, strict=True)) | {"time": row[1].isoformat()} for row in rows]


#: AuditEvent.action code per our action's verb (C create, R read, U update, E execute).
_FHIR_ACTION = {"ingest": "C", "token.create": "C", "token.revoke": "U", "session.start": "E"}
#: AuditEvent.outcome per our outcome ("0" success, "4" minor failure, "8" serious failure).
_FHIR_OUTCOME = {OK: "0", NOT_FOUND: "4", DENIED: "4", REJECTED: "4", ERROR: "8"}


def audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """One audit row as a FHIR R4 AuditEvent (type "rest", the agent, the patient as entity)."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": f"leukowatch-audit-{row['seq']}",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "urn:leukowatch:audit-action", "code": row["action"]}],
        "action": _FHIR_ACTION.get(row["action"], "R"),
        "recorded": row["time"],
        "outcome": _FHIR_OUTCOME.get(row["outcome"], "8"),
        "outcomeDesc": row["outcome"],
        "agent": [{"who": {"display": row["actor"]}, "requestor": True,
                   "role": [{"text": row["role"] or ""}], "altId": row["kind"] or ""}],
        "source": {"observer": {"display": "leukowatch"}},
    }
    entities: list[dict[str, Any]] = [{"what": {"display": row["endpoint"] or ""},
                                       "type": {"code": "2", "display": "System Object"}}]
    if row.get("patient_id"):
        entities.insert(0, {"what": {"reference": f"Patient/{row['patient_id']}"},
                            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                     "code": "1", "display": "Person"}})
    event["entity"] = entities
    return event


def audit_bundle(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows as a FHIR searchset Bundle of AuditEvents."""
    return {"resourceType": "Bundle", "type": "searchset", "total": len(rows),
            "entry": [{"resource": audit_event(r)} for r in rows]}
