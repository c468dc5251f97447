"""REST: `POST /api/assess`, `GET /api/knowledge`, and the stored-patient endpoints.

The body of `/api/assess` is read raw (no pydantic model): the project's own validator
(`parse_request`) names bad fields in the same words as the CLI, and skipping a second validation
layer keeps the latency goal. The OpenAPI schema still describes the accepted bodies, so /docs and
schemathesis know what to send.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..assess import assess
from ..knowledge import summary
from ..model import InputError
from ..render.json import assessment_dict
from .auth import Actor, audited, require_role
from .badinput import explained
from .errors import ServiceError
from .inputs import ACCEPTED_TYPES, HL7_TYPES, media_type, request_from_body

if TYPE_CHECKING:
    from ..io.store import IngestSummary

router = APIRouter(prefix="/api", tags=["REST"])

_OBSERVATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "analyte": {"type": "string", "examples": ["wbc"]},
        "code": {"type": "string", "description": "LOINC code, e.g. 770-8 (neutrophils %)"},
        "value": {"oneOf": [{"type": "number"}, {"type": "string", "examples": ["<1"]}]},
        "unit": {"type": "string", "examples": ["10*9/L", "K/uL", "%"]},
        "time": {"type": "string", "format": "date-time"},
        "reference_range": {"type": "object", "properties": {"low": {"type": "number"}, "high": {"type": "number"}}},
    },
    "required": ["value", "unit"],
}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The project JSON request (docs/contracts.md).",
    "properties": {
        "patient": {"type": "object", "properties": {
            "id": {"type": "string"}, "sex": {"type": "string", "enum": ["male", "female", "unknown"]},
            "age_years": {"type": "number"}, "birth_date": {"type": "string", "format": "date"},
            "duffy_null": {"type": "boolean"}}},
        "observations": {"type": "array", "items": _OBSERVATION_SCHEMA, "minItems": 1},
        "medications": {"type": "array", "items": {"oneOf": [
            {"type": "string"},
            {"type": "object", "properties": {"name": {"type": "string"}, "start": {"type": "string"},
                                              "stop": {"type": ["string", "null"]}}, "required": ["name"]}]}},
        "conditions": {"type": "array", "items": {"type": "string"}},
        "symptoms": {"type": "array", "items": {"type": "string"}},
        "temperature_c": {"type": "number"},
        "chemotherapy": {"type": "object", "properties": {"active": {"type": "boolean"},
                                                          "last_dose": {"type": "string", "format": "date"}}},
        "profile": {"type": "string"},
        "criteria": {"type": "string"},
    },
    "required": ["observations"],
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "field": {"type": ["string", "null"]}, "problem": {"type": "string"}}}},
}
_ERRORS = {code: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
           for code, text in ((413, "Body too large"), (415, "Unsupported Content-Type"),
                              (422, "Bad input: names the field and the problem"))}
_TEXT_BODY = {"type": "string", "description": "An HL7 v2 ORU^R01 message (segments separated by CR)"}
_ASSESS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": REQUEST_SCHEMA},
            "application/fhir+json": {"schema": {
                "type": "object", "description": "FHIR R4 Bundle, DiagnosticReport or Observation",
                "properties": {"resourceType": {"type": "string"}}, "required": ["resourceType"]}},
            "x-application/hl7-v2+er7": {"schema": _TEXT_BODY},
            "text/plain": {"schema": _TEXT_BODY},
        },
    },
}


def _override(request: dict[str, Any] | Any, profile: str | None, criteria: str | None) -> Any:
    if isinstance(request, dict):
        if profile:
            request["profile"] = profile
        if criteria:
            request["criteria"] = criteria
    return request


@router.post("/assess", summary="Assess one blood count", openapi_extra=_ASSESS_OPENAPI,
             responses={200: {"description": "The Assessment (docs/contracts.md)"}, **_ERRORS})
async def api_assess(request: Request, profile: str | None = Query(None, description="standard, article, duffy_null"),
                     criteria: str | None = Query(None, description="ctcae-v5, ctcae-v6, daids-v2.1")) -> Response:
    """Project JSON, FHIR JSON or an HL7 v2 message (by Content-Type) -> the Assessment as JSON.

    A small body is assessed on the event loop (the latency goal); a large one in a worker thread,
    so one big message cannot stall every other request."""
    settings = request.app.state.settings
    if not settings.open_stateless:
        await _STATELESS_ROLE(request)
    body = await request.body()
    content_type = request.headers.get("content-type")

    def run() -> bytes:
        if media_type(content_type) in HL7_TYPES:
            check_segments(body.decode("utf-8", "replace"), settings.max_segments)
        with explained(body):
            data = _override(request_from_body(body, content_type), profile, criteria)
            # orjson directly: the hot path's serialiser (FastAPI's ORJSONResponse is deprecated)
            return orjson.dumps(assessment_dict(assess(data)))

    out = run() if len(body) <= INLINE_BYTES else await run_in_threadpool(run)
    return Response(out, media_type="application/json")


#: Bodies up to this size are assessed on the event loop; larger ones in a worker thread.
INLINE_BYTES = 16_384
_STATELESS_ROLE = require_role("read")


knowledge_summary = summary  # re-exported for the web page


@router.get("/knowledge", summary="The clinical knowledge tables with sources")
async def api_knowledge(request: Request) -> dict[str, Any]:
    if not request.app.state.settings.open_stateless:
        await _STATELESS_ROLE(request)
    return knowledge_summary()


_READ = Depends(audited("read"))
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or unknown bearer token (see WWW-Authenticate)"},
    403: {"description": "The token's role may not do this"},
    503: {"description": "The store is held by another process: retry after Retry-After seconds"},
}


@router.get("/patients", summary="Patients in the store (role read)", responses=_AUTH_ERRORS)
def api_patients(request: Request, actor: Actor = _READ) -> list[dict[str, Any]]:
    from ..io.store import list_patients

    cur = request.app.state.store.cursor()
    try:
        rows = list_patients(cur)
    finally:
        cur.close()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]


def stored_request(request: Request, patient_id: str) -> dict[str, Any]:
    """A stored patient's request (every observation as history), 404 when the store lacks them."""
    from ..io.store import load_patient_request

    cur = request.app.state.store.cursor()
    try:
        return load_patient_request(cur, patient_id)
    except InputError as exc:
        raise ServiceError(404, "patient_id", exc.problem) from None
    finally:
        cur.close()


@router.get("/patients/{patient_id:path}/history", summary="A stored patient's timeline verdicts (role read)",
            responses={404: _ERRORS[422] | {"description": "No such patient"}, **_AUTH_ERRORS})
def api_history(request: Request, patient_id: str, actor: Actor = _READ) -> dict[str, Any]:
    from ..history import build_history

    return build_history(stored_request(request, patient_id)).to_dict()


@router.get("/patients/{patient_id:path}/report.pdf", summary="A stored patient's printable report (PDF, role read)",
            response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}, 404: {"description": "No such patient"},
                       **_AUTH_ERRORS})
def api_report_pdf(request: Request, patient_id: str, actor: Actor = _READ) -> Response:
    from ..history import build_history
    from ..render.plots import history_png
    from ..render.report import render_pdf

    req = stored_request(request, patient_id)
    history = build_history(req)
    pdf = render_pdf(history, assess(req), history_png(history))
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": 'attachment; filename="leukowatch-report.pdf"'})


__all__ = ["router", "knowledge_summary", "REQUEST_SCHEMA", "ACCEPTED_TYPES"]


_INGEST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": {"type": "object", "properties": {"resourceType": {"type": "string"}},
                                                 "required": ["resourceType"]}},
            "x-application/hl7-v2+er7": {"schema": _TEXT_BODY},
            "text/plain": {"schema": _TEXT_BODY},
        },
    },
}


@router.post("/ingest", summary="Store a FHIR Bundle or HL7 v2 message in the store (idempotent; role ingest)",
             openapi_extra=_INGEST_OPENAPI, responses={**_ERRORS, **_AUTH_ERRORS})
async def api_ingest(request: Request, actor: Annotated[Actor, Depends(require_role("ingest"))]) -> dict[str, Any]:
    """Same reader and store as `leukowatch ingest`, written by the store's one writer: one
    transaction per message with the duplicate check inside it, so the same body sent twice (or
    twenty times at once) is stored once and every sender is told "stored" or "already stored".
    Parsing runs off the event loop within the per-message limits. Only a bearer token may ingest:
    a browser session could be made to post a form or text/plain body by a foreign page."""
    import hashlib

    from ..io import read_text
    from ..io.store import write_result_in_transaction
    from . import audit
    from .inputs import FHIR_TYPES, HL7_TYPES, JSON_TYPES, decode_body, media_type

    if actor.kind == "session":
        raise ServiceError(403, "Authorization", "ingest needs a bearer token, not a browser session")
    body = await request.body()
    kind = media_type(request.headers.get("content-type"))
    fmt = "hl7" if kind in HL7_TYPES else "fhir" if kind in FHIR_TYPES + JSON_TYPES else None
    if fmt is None:
        raise ServiceError(415, "Content-Type", "send FHIR JSON (application/fhir+json) or HL7 v2 "
                                                "(x-application/hl7-v2+er7)")
    sha = hashlib.sha256(body).hexdigest()
    settings = request.app.state.settings

    def parse() -> Any:
        text = decode_body(body).lstrip("\ufeff\x0b \r\n\t")
        if fmt == "hl7":
            check_segments(text, settings.max_segments)
        with explained(body):
            result = read_text(text, fmt, "body")
        if len(result.items) + len(result.rejects) > settings.max_results:
            raise ServiceError(413, "body", f"more than {settings.max_results} results in one message")
        return result

    try:
        result = await run_in_threadpool(parse)
    except (InputError, ServiceError):
        # a refused message is an attempted write: audited (no patient: it could not be read)
        await asyncio.wrap_future(audit.record(request.app.state.writer, actor, "ingest", "/api/ingest", audit.REJECTED))
        raise

    def store(con: Any) -> Any:
        summary = write_result_in_transaction(con, result, f"api:{sha[:16]}", sha, fmt, reject_future=True)
        patients = dict.fromkeys(i.observation.patient_id for i in result.items if i.observation.patient_id)
        outcome = audit.OK if not summary.skipped_file else "duplicate"
        for pid in patients or [None]:
            audit.insert(con, actor, "ingest", "/api/ingest", outcome, pid)
        return summary

    summary = await request.app.state.writer.run(store)
    # the store's own rejects (no patient id, dated in the future) too, not only the reader's
    rejects = result.rejects if summary.skipped_file else summary.rejects
    return {"format": fmt, "status": ingest_status(summary),
            "read": summary.read, "accepted": summary.accepted, "rejected": summary.rejected,
            "stored": summary.stored, "already_ingested": summary.skipped_file,
            "rejects": [{"locator": r.locator, "kind": r.kind, "reason": r.reason} for r in rejects]}


def ingest_status(summary: IngestSummary) -> str:
    """What an ingest did, in one word a sender can branch on: "stored" only when results are now in
    the store because of it, so a message whose every result was rejected is never called stored."""
    if summary.skipped_file or (summary.accepted and not summary.stored):
        return "already stored"
    return "stored" if summary.stored else "nothing stored"


def check_segments(text: str, limit: int) -> None:
    """Refuse an HL7 message with more than `limit` segments before parsing it."""
    if text.count("\r") + text.count("\n") > limit:
        raise ServiceError(413, "body", f"more than {limit} HL7 segments in one message")


@router.get("/audit", summary="The access audit (role admin): who read or wrote which patient's data",
            responses=_AUTH_ERRORS)
async def api_audit(request: Request, actor: Annotated[Actor, Depends(audited("admin", "audit.read"))],
                    patient: str | None = Query(None, description="patient id"),
                    who: str | None = Query(None, alias="actor", description="token name or JWT subject"),
                    since: Annotated[datetime | None, Query()] = None,
                    until: Annotated[datetime | None, Query()] = None,
                    format: str = Query("json", pattern="^(json|fhir)$",
                                        description="json rows or a FHIR Bundle of AuditEvent"),
                    limit: int = Query(1000, ge=1, le=100_000)) -> Any:
    from . import audit

    since, until = (_utc(t) for t in (since, until))
    rows = await request.app.state.writer.run(lambda con: audit.query(con, patient, who, since, until, limit))
    return audit.audit_bundle(rows) if format == "fhir" else rows


def _utc(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


@router.get("/tokens", summary="API tokens (role admin): names, roles, states; never the tokens",
            responses=_AUTH_ERRORS)
async def api_tokens(request: Request, actor: Annotated[Actor, Depends(audited("admin", "token.list"))]) -> Any:
    from .auth import list_tokens

    return await request.app.state.writer.run(list_tokens)


@router.post("/tokens", summary="Create an API token (role admin); the token is in the answer only",
             responses=_AUTH_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["name", "role"],
                 "properties": {"name": {"type": "string"}, "role": {"enum": ["read", "ingest", "admin"]}}}}}}})
async def api_create_token(request: Request, actor: Annotated[Actor, Depends(audited("admin", "token.create"))]) -> Any:
    from .auth import create_token
    from .inputs import decode_body, parse_json

    body = parse_json(decode_body(await request.body()))
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(body.get("role"), str):
        raise InputError("body", 'expected {"name": "...", "role": "read|ingest|admin"}')
    token = await request.app.state.writer.run(lambda con: create_token(con, body["name"], body["role"]))
    return {"name": body["name"], "role": body["role"], "token": token}


@router.delete("/tokens/{name}", summary="Revoke an API token (role admin)", responses=_AUTH_ERRORS)
async def api_revoke_token(request: Request, name: str,
                           actor: Annotated[Actor, Depends(audited("admin", "token.revoke"))]) -> dict[str, Any]:
    from .auth import revoke_token

    if not await request.app.state.writer.run(lambda con: revoke_token(con, name)):
        raise ServiceError(404, "name", "no active token with this name")
    request.app.state.auth.revoked(name)
    return {"name": name, "revoked": True}
