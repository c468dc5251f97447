"""CDS Hooks 2.0: discovery, `patient-view` and `order-select` services, and feedback.

A hook call is turned into the project's request with the Interop FHIR reader (prefetched or
fetched resources gathered into one collection Bundle), assessed by the same `assess` as every other
entry point, and answered with cards (cds_cards.py). What the call must carry: a verified JWT
(cds_auth.py), `context.patientId`, and the patient and CBC data either prefetched or readable from
`fhirServer`; without the data the answer is 412, as the spec asks.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..assess import assess
from ..knowledge import load_table
from ..model import ANALYTES, InputError, MedicationMatch
from ..rules.causes import match_medications
from ..units import loinc_codes_for
from .badinput import explained
from .cds_auth import TokenVerifier
from .cds_cards import card, order_select_cards, patient_view_cards
from .errors import ServiceError
from .fhir_client import FetchError, fhir_get
from .inputs import parse_json

log = logging.getLogger("leukowatch.service.cds")
router = APIRouter(tags=["CDS Hooks"])

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

PATIENT_VIEW = "leukowatch-patient-view"
ORDER_SELECT = "leukowatch-order-select"


def cbc_loinc_codes() -> list[str]:
    """Every LOINC code leukowatch reads (absolute and %), for the Observation search."""
    codes: list[str] = []
    for analyte in ANALYTES:
        for percent in (False, True):
            codes += [c for c in loinc_codes_for(analyte, percent) if c not in codes]
    return codes


def prefetch_templates() -> dict[str, str]:
    """Patient; CBC Observations by LOINC (newest first; the service keeps the lookback window);
    body temperatures (vital signs, knowledge/temperature.toml: the highest on the day of the latest
    draw counts for febrile neutropenia); active MedicationRequests; active Conditions. CDS Hooks 2.0
    prefetch tokens only."""
    codes = ",".join(f"http://loinc.org|{c}" for c in cbc_loinc_codes())
    temperatures = ",".join(f"http://loinc.org|{c}" for c in load_table("temperature")["codes"])
    return {
        "patient": "Patient/{{context.patientId}}",
        "cbc": f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count=200",
        "temperatures": f"Observation?patient={{{{context.patientId}}}}&code={temperatures}&_sort=-date&_count=50",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
        "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
    }


#: Which prefetch keys a hook cannot do without (412 when neither prefetched nor fetchable).
REQUIRED_KEYS = ("patient", "cbc")

SERVICES: dict[str, dict[str, str]] = {
    PATIENT_VIEW: {
        "hook": "patient-view", "title": "leukowatch: low white-cell counts",
        "description": "Flags leukopenia and neutropenia (CTCAE grade, acute or chronic, febrile neutropenia) in "
                       "the patient's recent blood counts, with possible causes among their medicines and "
                       "conditions, each with its source.",
    },
    ORDER_SELECT: {
        "hook": "order-select", "title": "leukowatch: medicines linked to low white cells",
        "description": "Warns when a medicine linked to leukopenia or neutropenia is ordered for a patient whose "
                       "recent white-cell or neutrophil count is low, naming the drug and the count.",
    },
}


@router.get("/cds-services", summary="CDS Hooks discovery")
async def discovery() -> dict[str, Any]:
    templates = prefetch_templates()
    return {"services": [{**spec, "id": sid, "prefetch": templates, "usageRequirements":
                          "Send a JWT signed with RS384 or ES384 from an allow-listed issuer."}
                         for sid, spec in SERVICES.items()]}


def _base_url(request: Request) -> str:
    """The service's base URL: the configured public URL, else (on loopback only: `serve` requires a
    public URL beyond it) the address the server socket is bound to. Never the request's Host or
    forwarded headers, which the caller chooses."""
    settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host, port = request.scope.get("server") or ("127.0.0.1", 80)
    return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"


def _called_url(request: Request) -> str:
    """The URL the JWT `aud` must equal: the base URL plus the service path."""
    return _base_url(request) + request.url.path


async def _authenticate(request: Request) -> dict[str, Any]:
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(request.headers.get("authorization"), _called_url(request), request.app.state.http)


def _allowed_server(request: Request, claims: dict[str, Any], server: str) -> bool:
    """Whether the hook's `fhirServer` is on the allowlist of the issuer that signed the call (any
    server under --insecure-dev, where nothing is verified): the EHR's access token goes nowhere else."""
    if request.app.state.settings.insecure_dev:
        return True
    trust = request.app.state.verifier.trust.get(claims.get("iss"), {})
    return server.rstrip("/") in trust.get("fhir_servers", ())


async def _hook_body(request: Request, service_id: str) -> dict[str, Any]:
    if service_id not in SERVICES:
        raise ServiceError(404, "service", f"no CDS service {service_id!r}; see GET /cds-services")
    request.state.claims = await _authenticate(request)
    body = parse_json((await request.body()).decode("utf-8", errors="replace"))
    if not isinstance(body, dict):
        raise InputError("$", "expected a CDS Hooks request object")
    if body.get("hook") != SERVICES[service_id]["hook"]:
        raise InputError("hook", f"this service answers {SERVICES[service_id]['hook']!r}, got {body.get('hook')!r}")
    if not isinstance(body.get("hookInstance"), str):
        raise InputError("hookInstance", "missing")
    context = body.get("context")
    if not isinstance(context, dict) or not isinstance(context.get("patientId"), str) or not context["patientId"]:
        raise InputError("context.patientId", "missing")
    return body


def _fetch_query(key: str, template: str, patient_id: str, cutoff: datetime) -> str:
    query = template.replace("{{context.patientId}}", patient_id)
    if key in ("cbc", "temperatures"):  # the service can say what the 2.0 tokens cannot: the lookback window
        query += f"&date=ge{cutoff.date().isoformat()}"
    return query


async def gather(request: Request, body: dict[str, Any], cutoff: datetime) -> dict[str, Any]:
    """Each prefetch key's data, from prefetch or the FHIR server; 412 when a required one is missing."""
    settings = request.app.state.settings
    prefetch = body.get("prefetch") if isinstance(body.get("prefetch"), dict) else {}
    server = body.get("fhirServer") if isinstance(body.get("fhirServer"), str) else None
    auth = body.get("fhirAuthorization") if isinstance(body.get("fhirAuthorization"), dict) else {}
    token = auth.get("access_token") if isinstance(auth.get("access_token"), str) else None
    patient_id = body["context"]["patientId"]
    out: dict[str, Any] = {}
    for key, template in prefetch_templates().items():
        given = prefetch.get(key)
        if isinstance(given, dict):
            out[key] = given
            continue
        if given is not None:  # null means "the EHR could not prefetch it" (CDS Hooks); anything else is wrong
            raise ServiceError(422, f"prefetch.{key}", f"expected a FHIR resource, a Bundle or null, got "
                                                       f"{type(given).__name__}")
        if server is None:
            if key in REQUIRED_KEYS:
                raise ServiceError(412, f"prefetch.{key}", "not prefetched and no fhirServer to fetch it from")
            continue
        if not _allowed_server(request, getattr(request.state, "claims", {}), server):
            if key in REQUIRED_KEYS:
                raise ServiceError(412, "fhirServer", f"prefetch.{key} is missing and fhirServer is not on this "
                                                      "issuer's allowlist, so it is not fetched")
            continue
        try:
            out[key] = await fhir_get(request.app.state.http, server, _fetch_query(key, template, patient_id, cutoff),
                                      token, settings.fhir_timeout_s)
        except FetchError as exc:
            log.warning("CDS fetch failed: %s", exc)
            if key in REQUIRED_KEYS:
                raise ServiceError(412, f"prefetch.{key}", f"not prefetched and not fetchable ({exc})") from None
    return out


def _resources(data: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    if data.get("resourceType") == "Bundle":
        entries = data.get("entry") or []
        if not isinstance(entries, list):
            raise ServiceError(422, f"{field}.entry", "expected a list of Bundle entries")
        return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    if "resourceType" not in data:  # not silently an empty record: the card would say nothing was found
        raise ServiceError(422, field, "expected a FHIR resource or a Bundle (no resourceType)")
    return [data]


def _bundle(resources: list[dict[str, Any]]) -> str:
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})


def request_from_fhir(data: dict[str, Any], cutoff: datetime) -> dict[str, Any] | None:
    """The project request from the gathered resources, keeping CBC results inside the window;
    None when no blood count is left to assess."""
    from ..io import read_text, to_request

    resources = [r for key in ("patient", "cbc", "temperatures", "medications", "conditions")
                 for r in _resources(data.get(key), f"prefetch.{key}")]
    result = read_text(_bundle(resources), "fhir", "prefetch")
    result.items = [i for i in result.items if i.observation.time is None or i.observation.time >= cutoff]
    if not result.items:
        return None
    return to_request(result)


def ordered_medications(context: dict[str, Any]) -> list[MedicationMatch]:
    """The selected draft MedicationRequests (all drafts when `selections` is absent) that the drug
    table links to low white cells, read with the Interop FHIR reader."""
    from ..io import read_text

    drafts = _resources(context.get("draftOrders"), "context.draftOrders")
    selections = context.get("selections")
    if isinstance(selections, list) and selections:
        wanted = {str(s) for s in selections}
        drafts = [r for r in drafts if f"{r.get('resourceType')}/{r.get('id')}" in wanted]
    drafts = [r for r in drafts if r.get("resourceType") in ("MedicationRequest", "MedicationStatement")]
    if not drafts:
        return []
    meds = [m for _, m in read_text(_bundle(drafts), "fhir", "context.draftOrders").medications]
    return match_medications(meds)


def _card_source(base: str) -> dict[str, str]:
    return {"label": "leukowatch (sourced leukopenia rules)", "url": f"{base}/knowledge"}


def _links(request: Request, base: str, patient_id: str) -> list[dict[str, str]]:
    links = [{"label": "Check a blood count in leukowatch", "url": f"{base}/", "type": "absolute"}]
    if request.app.state.store.path and request.app.state.store.has_patient(patient_id):
        links.insert(0, {"label": "Timeline and printable report", "url": f"{base}/patients/{patient_id}",
                         "type": "absolute"})
    return links


def _unreadable_card(exc: InputError, source: dict[str, str]) -> dict[str, Any]:
    return card("leukowatch could not read this patient's data", "info",
                f"`{exc.field}`: {exc.problem}", source, [])


_HOOK_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string", "enum": ["patient-view", "order-select"]},
        "hookInstance": {"type": "string"},
        "fhirServer": {"type": "string", "format": "uri"},
        "fhirAuthorization": {"type": "object", "properties": {"access_token": {"type": "string"},
                                                               "token_type": {"type": "string"}}},
        "context": {"type": "object", "required": ["patientId"], "properties": {
            "patientId": {"type": "string"}, "userId": {"type": "string"},
            "selections": {"type": "array", "items": {"type": "string"}},
            "draftOrders": {"type": "object"}}},
        "prefetch": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
    },
}
_FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["feedback"],
    "properties": {"feedback": {"type": "array", "items": {"type": "object", "properties": {
        "card": {"type": "string"}, "outcome": {"type": "string", "enum": ["accepted", "overridden"]}}}}},
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/cds-services/{service_id}", summary="Call a CDS service (patient-view or order-select)",
             openapi_extra=_json_body(_HOOK_REQUEST_SCHEMA))
async def call_service(request: Request, service_id: str) -> dict[str, Any]:
    with explained(await request.body()):
        return await _call_service(request, service_id)


async def _call_service(request: Request, service_id: str) -> dict[str, Any]:
    body = await _hook_body(request, service_id)
    settings = request.app.state.settings
    cutoff = datetime.now(UTC) - timedelta(days=settings.cds_lookback_days)
    data = await gather(request, body, cutoff)
    base = _base_url(request)
    source = _card_source(base)

    def answer() -> dict[str, Any]:
        # In a worker thread: reading a large prefetch and asking the store for the patient link
        # must not stall the event loop (and every other request with it).
        links = _links(request, base, body["context"]["patientId"])
        try:
            req = request_from_fhir(data, cutoff)
            if service_id == PATIENT_VIEW:
                return {"cards": [] if req is None else patient_view_cards(assess(req), source, links)}
            ordered = ordered_medications(body["context"])
            if req is not None:
                req["medications"] = list(req.get("medications", [])) + sorted({m.input for m in ordered})
            return {"cards": order_select_cards(None if req is None else assess(req), ordered,
                                                settings.cds_lookback_days, source, links)}
        except InputError as exc:
            return {"cards": [_unreadable_card(exc, source)]}

    return await run_in_threadpool(answer)


@router.post("/cds-services/{service_id}/feedback", summary="Card feedback (logged without patient data)",
             openapi_extra=_json_body(_FEEDBACK_SCHEMA))
async def feedback(request: Request, service_id: str) -> dict[str, Any]:
    if service_id not in SERVICES:
        raise ServiceError(404, "service", f"no CDS service {service_id!r}")
    await _authenticate(request)
    body = parse_json((await request.body()).decode("utf-8", errors="replace"))
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InputError("feedback", "expected a list of feedback items")
    for item in items:
        if isinstance(item, dict):
            # card uuid and outcome only, and only in their expected shapes: a client could put a name
            # or a value in any free-text field, and the log must never carry one
            card_id, outcome = str(item.get("card")), str(item.get("outcome"))
            log.info("CDS feedback service=%s card=%s outcome=%s", service_id,
                     card_id if _UUID.fullmatch(card_id) else "(not a uuid)",
                     outcome if outcome in ("accepted", "overridden") else "(other)")
    return {}


__all__ = ["router", "prefetch_templates", "cbc_loinc_codes", "PATIENT_VIEW", "ORDER_SELECT", "httpx"]
