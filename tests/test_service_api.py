"""REST API under a real uvicorn: the three input formats, field-naming errors, the size limit,
the knowledge endpoint and the OpenAPI docs; no stack trace reaches a client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from service_helpers import neutropenic_cbc, patient_resource, searchset, serve

from leukowatch.service import Settings, create_app

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukowatch" / "examples" / "febrile-neutropenia.json"
HL7 = "\r".join([
    "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20261120083000||ORU^R01|MSG0001|P|2.5.1",
    "PID|1||H123^^^HOSP^MR||Doe^Jane||19720302|F",
    "OBR|1||LAB1|58410-2^CBC panel^LN|||20261120080000",
    "OBX|1|NM|6690-2^WBC^LN||2.1|10*3/uL|3.5-11.0|L|||F|||20261120080000",
    "OBX|2|NM|751-8^Neutrophils^LN||0.45|10*3/uL|1.5-7.5|L|||F|||20261120080000",
]) + "\r"


@pytest.fixture(scope="module")
def base() -> str:
    with serve(create_app(Settings(max_body_bytes=100_000))) as url:
        yield url


def test_assess_project_json(base: str) -> None:
    resp = httpx.post(f"{base}/api/assess", content=EXAMPLE.read_bytes(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    a = resp.json()
    assert a["verdict"].startswith("EMERGENCY: febrile neutropenia")
    assert any(al["code"] == "febrile_neutropenia" and al["level"] == "critical" for al in a["alerts"])
    assert a["counts"]["neutrophils"]["per_uL"] == 420
    assert "patient" not in a  # identifiers are not echoed


def test_assess_query_overrides_profile(base: str) -> None:
    resp = httpx.post(f"{base}/api/assess", params={"profile": "article"}, content=EXAMPLE.read_bytes(),
                      headers={"Content-Type": "application/json"})
    assert resp.json()["profile"] == "article"


def test_assess_fhir_bundle(base: str) -> None:
    bundle = searchset([patient_resource(), *neutropenic_cbc(anc=0.45)])
    resp = httpx.post(f"{base}/api/assess", content=json.dumps(bundle),
                      headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["counts"]["neutrophils"]["value"] == pytest.approx(0.45)
    plain_json = httpx.post(f"{base}/api/assess", json=bundle)  # FHIR detected inside application/json
    assert plain_json.status_code == 200


@pytest.mark.parametrize("ctype", ["x-application/hl7-v2+er7", "text/plain; charset=utf-8"])
def test_assess_hl7(base: str, ctype: str) -> None:
    resp = httpx.post(f"{base}/api/assess", content=HL7.encode(), headers={"Content-Type": ctype})
    assert resp.status_code == 200, resp.text
    assert any(f["code"] == "neutropenia" for f in resp.json()["findings"])


@pytest.mark.parametrize(("body", "ctype", "field"), [
    ('{"observations": [{"analyte": "wbc", "value": 2.1, "unit": "bananas/uL"}]}', "application/json",
     "observations[0].unit"),
    ('{"observations": [{"analyte": "wbc", "value": -1, "unit": "10*9/L"}]}', "application/json", "observations[0]"),
    ('{"observations": []}', "application/json", "observations"),
    ('{"observations": [', "application/json", "body"),
    ("[1, 2]", "application/json", "$"),
    ("hello", "text/plain", "body"),
    ('{"resourceType": "Bundle", "entry": 5}', "application/fhir+json", None),
])
def test_bad_input_is_422_naming_the_field(base: str, body: str, ctype: str, field: str | None) -> None:
    resp = httpx.post(f"{base}/api/assess", content=body.encode(), headers={"Content-Type": ctype})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["problem"]
    if field is not None:
        assert err["field"].startswith(field)
    assert "Traceback" not in resp.text


def test_deeply_nested_json_is_a_clean_error(base: str) -> None:
    resp = httpx.post(f"{base}/api/assess", content=b"[" * 50_000 + b"]" * 50_000,
                      headers={"Content-Type": "application/json"})
    assert resp.status_code in (413, 422)
    assert "error" in resp.json()


def test_size_limit_413(base: str) -> None:
    resp = httpx.post(f"{base}/api/assess", content=b" " * 200_000, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["field"] == "body"

    def chunks():
        for _ in range(40):
            yield b" " * 10_000

    chunked = httpx.post(f"{base}/api/assess", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


def test_unsupported_media_type_415(base: str) -> None:
    resp = httpx.post(f"{base}/api/assess", content=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert resp.status_code == 415 and resp.json()["error"]["field"] == "Content-Type"


def test_knowledge(base: str) -> None:
    k = httpx.get(f"{base}/api/knowledge").json()
    assert k["knowledge_version"]
    assert "standard" in k["profiles"]
    assert all(d["source"] for d in k["drugs"])
    assert any(d["generic"] == "clozapine" for d in k["drugs"])


def test_openapi_and_docs(base: str) -> None:
    schema = httpx.get(f"{base}/openapi.json").json()
    content = schema["paths"]["/api/assess"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/fhir+json", "x-application/hl7-v2+er7"} <= set(content)
    assert "/cds-services" in schema["paths"]
    docs = httpx.get(f"{base}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # Works offline: every script and stylesheet of the docs page is served by the app itself.
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    for asset in ("/swagger-ui/swagger-ui-bundle.js", "/swagger-ui/swagger-ui.css"):
        assert asset in docs.text and httpx.get(f"{base}{asset}").status_code == 200


def test_unknown_route_is_json_404(base: str) -> None:
    resp = httpx.get(f"{base}/api/nope")
    assert resp.status_code == 404 and resp.json()["error"]["problem"]


@pytest.mark.parametrize("path", ["/", "/result.pdf"])
def test_the_form_and_its_pdf_answer_a_bad_field_with_the_form(base: str, path: str) -> None:
    """A field the form's own checks pass but the assessment refuses (a temperature in Fahrenheit)
    comes back as the form with the message next to it, from the PDF button as from the result."""
    resp = httpx.post(f"{base}{path}", data={"wbc": "3", "neutrophils": "0.3", "temperature_c": "101"})
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("text/html")
    assert "looks like degrees Fahrenheit" in resp.text
    ok = httpx.post(f"{base}{path}", data={"wbc": "3", "neutrophils": "0.3", "temperature_c": "38.5"}, timeout=60)
    assert ok.status_code == 200
