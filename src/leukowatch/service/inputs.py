"""An HTTP body -> the project's request dict, chosen by Content-Type.

The formats are the CLI's (project JSON, FHIR JSON, HL7 v2); the FHIR and HL7 readers are
`leukowatch.io.request_from_text`, so the service and `leukowatch assess FILE` read a message the
same way. Only the choice of format differs: here it comes from the Content-Type header.
"""

from __future__ import annotations

import json
from typing import Any

from ..model import InputError
from .errors import ServiceError

#: Content types `POST /api/assess` accepts, by format.
JSON_TYPES = ("application/json",)
FHIR_TYPES = ("application/fhir+json", "application/json+fhir")
HL7_TYPES = ("x-application/hl7-v2+er7", "application/hl7-v2", "application/hl7-v2+er7", "text/plain")
ACCEPTED_TYPES = JSON_TYPES + FHIR_TYPES + HL7_TYPES


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def decode_body(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError("body", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_json(text: str, field: str = "body") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(field, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(field, "JSON nested too deeply") from None


def _fhir(text: str, source: str) -> dict[str, Any]:
    from ..io import request_from_text  # the Interop reader; imported only for this format

    return request_from_text(text, "fhir", source)


def _hl7(text: str, source: str) -> dict[str, Any]:
    from ..io import request_from_text

    return request_from_text(text, "hl7", source)


def request_from_body(body: bytes, content_type: str | None, source: str = "body") -> Any:
    """The request dict a body describes (validation proper happens in `parse_request`).

    JSON carrying a FHIR `resourceType` (and no `observations`) is read as FHIR even when sent as
    plain application/json, as the CLI does; text/plain must be an HL7 v2 message (starts with MSH).
    """
    kind = media_type(content_type)
    if kind not in ACCEPTED_TYPES:
        raise ServiceError(415, "Content-Type",
                           f"unsupported media type {kind or '(none)'!r}; send one of {', '.join(ACCEPTED_TYPES)}")
    text = decode_body(body)
    stripped = text.lstrip("\ufeff\x0b \r\n\t")
    if kind in HL7_TYPES:
        if not stripped.startswith("MSH"):
            raise InputError(source, "expected an HL7 v2 message starting with MSH")
        return _hl7(stripped, source)
    if kind in FHIR_TYPES:
        parse_json(stripped, source)  # a JSON error names the line before the FHIR reader sees it
        return _fhir(stripped, source)
    data = parse_json(stripped, source)
    if isinstance(data, dict) and "resourceType" in data and "observations" not in data:
        return _fhir(stripped, source)
    return data
