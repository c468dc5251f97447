"""REST: `POST /api/assess`, `GET /api/knowledge`, and the stored-patient endpoints.

The body of `/api/assess` is read raw (no pydantic model): the project's own validator
(`parse_request`) names bad fields in the same words as the CLI, and skipping a second validation
layer keeps the latency goal. The OpenAPI schema still describes the accepted bodies, so /docs and
schemathesis know what to send.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ..assess import assess
from ..knowledge import summary
from ..model import InputError
from ..render.json import assessment_dict
from .errors import ServiceError
from .inputs import ACCEPTED_TYPES, request_from_body

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
    "description": "The project JSON request (DESIGN.md § Contracts).",
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
             responses={200: {"description": "The Assessment (DESIGN.md § Contracts)"}, **_ERRORS})
async def api_assess(request: Request, profile: str | None = Query(None, description="standard, article, duffy_null"),
                     criteria: str | None = Query(None, description="ctcae-v5, ctcae-v6")) -> Response:
    """Project JSON, FHIR JSON or an HL7 v2 message (by Content-Type) -> the Assessment as JSON."""
    body = await request.body()
    data = _override(request_from_body(body, request.headers.get("content-type")), profile, criteria)
    # orjson directly: the hot path's serialiser (FastAPI's ORJSONResponse is deprecated)
    return Response(orjson.dumps(assessment_dict(assess(data))), media_type="application/json")


knowledge_summary = summary  # re-exported for the web page


@router.get("/knowledge", summary="The clinical knowledge tables with sources")
async def api_knowledge() -> dict[str, Any]:
    return knowledge_summary()


@router.get("/patients", summary="Patients in the store")
def api_patients(request: Request) -> list[dict[str, Any]]:
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


@router.get("/patients/{patient_id}/history", summary="A stored patient's timeline verdicts",
            responses={404: _ERRORS[422] | {"description": "No such patient"}})
def api_history(request: Request, patient_id: str) -> dict[str, Any]:
    from ..history import build_history

    return build_history(stored_request(request, patient_id)).to_dict()


@router.get("/patients/{patient_id}/report.pdf", summary="A stored patient's printable report (PDF)",
            response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}, 404: {"description": "No such patient"}})
def api_report_pdf(request: Request, patient_id: str) -> Response:
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


@router.post("/ingest", summary="Store a FHIR Bundle or HL7 v2 message in the store (idempotent)",
             openapi_extra=_INGEST_OPENAPI, responses=_ERRORS)
async def api_ingest(request: Request) -> dict[str, Any]:
    """Same reader and store as `leukowatch ingest`; the same body twice adds nothing the second time."""
    import hashlib

    from starlette.concurrency import run_in_threadpool

    from ..io import read_text
    from .inputs import FHIR_TYPES, HL7_TYPES, JSON_TYPES, decode_body, media_type

    body = await request.body()
    kind = media_type(request.headers.get("content-type"))
    fmt = "hl7" if kind in HL7_TYPES else "fhir" if kind in FHIR_TYPES + JSON_TYPES else None
    if fmt is None:
        raise ServiceError(415, "Content-Type", "send FHIR JSON (application/fhir+json) or HL7 v2 "
                                                "(x-application/hl7-v2+er7)")
    sha = hashlib.sha256(body).hexdigest()
    result = read_text(decode_body(body).lstrip("\ufeff\x0b \r\n\t"), fmt, "body")

    def store() -> Any:
        from ..io.store import write_result

        cur = request.app.state.store.cursor()
        try:
            return write_result(cur, result, f"api:{sha[:16]}", sha, fmt)
        finally:
            cur.close()

    summary = await run_in_threadpool(store)
    return {"format": fmt, "read": summary.read, "accepted": summary.accepted, "rejected": summary.rejected,
            "stored": summary.stored, "already_ingested": summary.skipped_file,
            "rejects": [{"locator": r.locator, "kind": r.kind, "reason": r.reason} for r in result.rejects]}
