"""CDS Hooks against a real uvicorn: discovery, both hooks, fetching from a real FHIR server (a second
uvicorn app), 412, feedback, and every rejected-token case of the spec's security section."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from service_helpers import (
    Signer,
    condition,
    medication_request,
    neutropenic_cbc,
    observation,
    patient_resource,
    searchset,
    serve,
)

from leukowatch.service import Settings, create_app
from leukowatch.service.cds import ORDER_SELECT, PATIENT_VIEW, cbc_loinc_codes
from leukowatch.units import loinc_codes_for

ISS = "https://ehr.example.org"
FHIR_TOKEN = "fhir-access-token-1"


def fhir_app(jku_signer: Signer) -> FastAPI:
    """A small FHIR server: answers the service's reads and searches only with the right bearer token,
    and publishes a JWK Set (for the jku test)."""
    app = FastAPI()
    app.state.calls = []

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [jku_signer.jwk]}

    @app.get("/fhir/{resource_type}")
    @app.get("/fhir/{resource_type}/{rid}")
    async def fhir(request: Request, resource_type: str, rid: str | None = None) -> JSONResponse:
        app.state.calls.append(str(request.url))
        if request.headers.get("authorization") != f"Bearer {FHIR_TOKEN}":
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        pid = request.query_params.get("patient") or rid
        if pid == "missing":
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)
        if resource_type == "Patient":
            return JSONResponse(patient_resource(pid))
        if resource_type == "Observation":
            return JSONResponse(searchset(neutropenic_cbc(pid, anc=0.3)))
        if resource_type == "MedicationRequest":
            return JSONResponse(searchset([medication_request("m1", "Clozaril 100 mg", pid=pid)]))
        return JSONResponse(searchset([]))

    return app


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer("ES384")


@pytest.fixture(scope="module")
def rsa_signer() -> Signer:
    return Signer("RS384")


@pytest.fixture(scope="module")
def jku_signer() -> Signer:
    return Signer("ES384", kid="from-jku")


@pytest.fixture(scope="module")
def fhir(jku_signer: Signer):
    app = fhir_app(jku_signer)
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def base(signer: Signer, rsa_signer: Signer, fhir) -> str:
    fhir_url, _ = fhir
    settings = Settings(cds_issuers=(ISS,), cds_jwks={"keys": [signer.jwk, rsa_signer.jwk]},
                        cds_jku_allowlist=(f"{fhir_url}/jwks",), cds_fhir_servers=(f"{fhir_url}/fhir",))
    with serve(create_app(settings)) as url:
        yield url


def prefetch(anc: float = 0.4, meds: list[str] | None = None) -> dict[str, Any]:
    return {
        "patient": patient_resource(),
        "cbc": searchset(neutropenic_cbc(anc=anc)),
        "medications": searchset([medication_request(f"m{i}", m) for i, m in enumerate(meds or [])]),
        "conditions": searchset([condition("c1", "lupus")]),
    }


def hook_body(hook: str, context: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/1", "patientId": "pat-1", **(context or {})}, **extra}


def call(base: str, service: str, body: dict[str, Any], token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{base}/cds-services/{service}", json=body, headers=headers, timeout=10)


def test_discovery_lists_both_services_with_prefetch(base: str) -> None:
    services = {s["id"]: s for s in httpx.get(f"{base}/cds-services").json()["services"]}
    assert services[PATIENT_VIEW]["hook"] == "patient-view"
    assert services[ORDER_SELECT]["hook"] == "order-select"
    prefetch_templates = services[PATIENT_VIEW]["prefetch"]
    assert prefetch_templates["patient"] == "Patient/{{context.patientId}}"
    for code in loinc_codes_for("wbc") + loinc_codes_for("neutrophils") + loinc_codes_for("neutrophils", True):
        assert f"http://loinc.org|{code}" in prefetch_templates["cbc"]
    assert set(cbc_loinc_codes()) >= set(loinc_codes_for("lymphocytes"))
    assert "status=active" in prefetch_templates["medications"]
    assert prefetch_templates["conditions"].startswith("Condition?patient={{context.patientId}}")


def test_patient_view_with_prefetch_gives_a_sourced_card(base: str, signer: Signer) -> None:
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    resp = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch(0.4, ["Bactrim DS"])),
                signer.token(url))
    assert resp.status_code == 200, resp.text
    [card] = resp.json()["cards"]
    assert card["indicator"] == "critical"  # ANC 0.4 is severe neutropenia: the alert rules make it critical
    assert len(card["summary"]) < 140 and "neutropenia" in card["summary"]
    assert "**Findings**" in card["detail"] and "Source:" in card["detail"]
    assert "sulfamethoxazole/trimethoprim" in card["detail"] and "lupus" in card["detail"]
    assert card["source"]["label"] and card["source"]["url"].endswith("/knowledge")
    assert any(link["url"].startswith(base) for link in card["links"])


def test_patient_view_normal_counts_give_no_card(base: str, rsa_signer: Signer) -> None:
    body = hook_body("patient-view", prefetch={
        "patient": patient_resource(), "cbc": searchset([observation("w", "6690-2", 6.0, "10*3/uL"),
                                                         observation("n", "751-8", 3.5, "10*3/uL")]),
        "medications": searchset([]), "conditions": searchset([])})
    resp = call(base, PATIENT_VIEW, body, rsa_signer.token(f"{base}/cds-services/{PATIENT_VIEW}"))
    assert resp.status_code == 200 and resp.json() == {"cards": []}


def test_patient_view_ignores_results_older_than_the_lookback(base: str, signer: Signer) -> None:
    body = hook_body("patient-view", prefetch={
        "patient": patient_resource(), "cbc": searchset(neutropenic_cbc(days_ago=200)),
        "medications": searchset([]), "conditions": searchset([])})
    resp = call(base, PATIENT_VIEW, body, signer.token(f"{base}/cds-services/{PATIENT_VIEW}"))
    assert resp.json() == {"cards": []}


def test_order_select_of_a_listed_drug_for_a_neutropenic_patient_warns(base: str, signer: Signer) -> None:
    drafts = searchset([medication_request("draft-1", "Bactrim DS 800/160 mg BID", status="draft"),
                        medication_request("draft-2", "paracetamol 1 g", status="draft")])
    body = hook_body("order-select", {"selections": ["MedicationRequest/draft-1"], "draftOrders": drafts},
                     prefetch=prefetch(0.8))
    resp = call(base, ORDER_SELECT, body, signer.token(f"{base}/cds-services/{ORDER_SELECT}"))
    assert resp.status_code == 200, resp.text
    [card] = resp.json()["cards"]
    assert card["indicator"] == "warning"
    assert "sulfamethoxazole/trimethoprim" in card["summary"]
    assert "ANC 0.8" in card["summary"] and "800 cells/µL" in card["summary"]
    assert len(card["summary"]) < 140
    assert "paracetamol" not in card["detail"].split("**Possible causes**")[0]


def test_order_select_of_an_unlisted_drug_gives_no_card(base: str, signer: Signer) -> None:
    drafts = searchset([medication_request("draft-1", "paracetamol 1 g", status="draft")])
    body = hook_body("order-select", {"selections": ["MedicationRequest/draft-1"], "draftOrders": drafts},
                     prefetch=prefetch(0.8))
    resp = call(base, ORDER_SELECT, body, signer.token(f"{base}/cds-services/{ORDER_SELECT}"))
    assert resp.status_code == 200 and resp.json() == {"cards": []}


def test_missing_prefetch_is_fetched_from_fhir_server_with_the_bearer_token(base: str, signer: Signer, fhir) -> None:
    fhir_url, app = fhir
    app.state.calls.clear()
    body = hook_body("patient-view", fhirServer=f"{fhir_url}/fhir",
                     fhirAuthorization={"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "patient/*.read", "subject": "cds-service"})
    resp = call(base, PATIENT_VIEW, body, signer.token(f"{base}/cds-services/{PATIENT_VIEW}"))
    assert resp.status_code == 200, resp.text
    [card] = resp.json()["cards"]
    assert card["indicator"] == "critical"  # ANC 0.3 from the FHIR server: severe neutropenia
    assert "clozapine" in card["detail"]
    assert any("/fhir/Patient/pat-1" in c for c in app.state.calls)
    assert any("/fhir/Observation?" in c and "date=ge" in c for c in app.state.calls)


def test_412_when_required_data_cannot_be_had(base: str, signer: Signer, fhir) -> None:
    fhir_url, _ = fhir
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    no_server = call(base, PATIENT_VIEW, hook_body("patient-view"), signer.token(url))
    assert no_server.status_code == 412
    assert no_server.json()["error"]["field"] == "prefetch.patient"
    wrong_token = call(base, PATIENT_VIEW, hook_body("patient-view", fhirServer=f"{fhir_url}/fhir",
                                                     fhirAuthorization={"access_token": "nope"}), signer.token(url))
    assert wrong_token.status_code == 412 and "401" in wrong_token.json()["error"]["problem"]


def test_feedback_is_accepted_and_logged_without_patient_data(base: str, signer: Signer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    url = f"{base}/cds-services/{PATIENT_VIEW}/feedback"
    caplog.set_level(logging.INFO, logger="leukowatch.service.cds")
    body = {"feedback": [{"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
                          "overrideReason": {"userComment": "Jane Doe pat-1 already on G-CSF"},
                          "outcomeTimestamp": "2026-11-20T08:00:00Z"}]}
    resp = httpx.post(url, json=body, headers={"Authorization": f"Bearer {signer.token(url)}"})
    assert resp.status_code == 200
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "leukowatch.service.cds")
    assert "9368d37b-283f-44a0-93ea-547cebab93ed" in logged and "overridden" in logged
    assert "Jane" not in logged and "pat-1" not in logged


def test_jwks_from_an_allow_listed_jku_is_used(base: str, jku_signer: Signer, fhir) -> None:
    fhir_url, _ = fhir
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    ok = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch()),
              jku_signer.token(url, headers={"jku": f"{fhir_url}/jwks"}))
    assert ok.status_code == 200, ok.text
    not_allowed = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch()),
                       jku_signer.token(url, headers={"jku": "http://127.0.0.1:9/evil-jwks"}))
    assert not_allowed.status_code == 401


def _hs384(url: str) -> str:
    now = __import__("time").time()
    return jwt.encode({"iss": ISS, "aud": url, "exp": int(now) + 300, "iat": int(now), "jti": "h"},
                      "a-shared-secret-that-is-long-enough-for-hs384-0123456789", algorithm="HS384")


def _none(url: str) -> str:
    now = __import__("time").time()
    return jwt.encode({"iss": ISS, "aud": url, "exp": int(now) + 300, "iat": int(now), "jti": "n"},
                      None, algorithm="none")


@pytest.mark.parametrize("case", ["missing", "garbage", "none", "hmac", "wrong_aud", "aud_of_other_service",
                                  "expired", "unknown_iss", "unknown_key", "no_jti"])
def test_rejected_tokens_get_401(base: str, signer: Signer, case: str) -> None:
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    stranger = Signer("ES384", kid=signer.kid)  # same kid, different key: signature must fail
    token = {
        "missing": None,
        "garbage": "not.a.jwt",
        "none": _none(url),
        "hmac": _hs384(url),
        "wrong_aud": signer.token("https://elsewhere.example/cds-services/x"),
        "aud_of_other_service": signer.token(f"{base}/cds-services/{ORDER_SELECT}"),
        "expired": signer.token(url, exp_in=-120),
        "unknown_iss": signer.token(url, iss="https://evil.example"),
        "unknown_key": stranger.token(url),
        "no_jti": jwt.encode({"iss": ISS, "aud": url, "exp": 2**31, "iat": 0}, signer.private, algorithm="ES384",
                             headers={"kid": signer.kid}),
    }[case]
    resp = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch()), token)
    assert resp.status_code == 401, (case, resp.text)
    assert resp.json()["error"]["field"] == "Authorization"
    assert "Traceback" not in resp.text


def test_replayed_token_gets_401(base: str, signer: Signer) -> None:
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    token = signer.token(url)
    first = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch()), token)
    again = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch()), token)
    assert first.status_code == 200 and again.status_code == 401
    assert "replay" in again.json()["error"]["problem"]


def test_insecure_dev_accepts_unsigned_calls() -> None:
    with serve(create_app(Settings(insecure_dev=True))) as url:
        resp = call(url, PATIENT_VIEW, hook_body("patient-view", prefetch=prefetch()), None)
        assert resp.status_code == 200 and resp.json()["cards"]


def test_bad_hook_body_names_the_field(base: str, signer: Signer) -> None:
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    body = hook_body("patient-view", prefetch=prefetch())
    del body["context"]["patientId"]
    resp = call(base, PATIENT_VIEW, body, signer.token(url))
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "context.patientId"
    unknown = httpx.post(f"{base}/cds-services/nope", json=body, headers={"Authorization": f"Bearer {signer.token(url)}"})
    assert unknown.status_code == 404


@pytest.mark.parametrize(("value", "problem"), [("garbage", "got str"), ([1, 2], "got list"),
                                                ({"entry": []}, "no resourceType")])
def test_a_malformed_prefetch_value_names_its_key(base: str, signer: Signer, value: Any, problem: str) -> None:
    """A prefetch value is a FHIR resource, a Bundle or null (the EHR could not fetch it); anything else was read
    as no data at all, so the service answered an empty card list for a neutropenic patient."""
    url = f"{base}/cds-services/{PATIENT_VIEW}"
    resp = call(base, PATIENT_VIEW, hook_body("patient-view", prefetch={**prefetch(0.4), "cbc": value}),
                signer.token(url))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == "prefetch.cbc" and problem in error["problem"]
