"""CDS Hooks hardening found by probing with signed tokens (issue 12 §4), under real uvicorns:
keys bound to one issuer, `aud` from the configured public URL (never the Host header), a capped
token lifetime, and a per-issuer fhirServer allowlist (412 without fetching otherwise)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from service_helpers import Signer, patient_resource, searchset, serve

from leukowatch.service import Settings, create_app
from leukowatch.service.cds import PATIENT_VIEW

ISS_A, ISS_B = "https://ehr-a.example.org", "https://ehr-b.example.org"
PUBLIC = "https://cds.hospital.example"


def hook(**extra: Any) -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": "5b1d3a7e-0000-4000-8000-000000000001",
            "context": {"userId": "Practitioner/1", "patientId": "pat-1"}, **extra}


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {"a": Signer("ES384", kid="key-a", iss=ISS_A), "b": Signer("ES384", kid="key-b", iss=ISS_B)}


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[tuple[str, list[str]]]:
    """A FHIR server that records every request it gets (with the Authorization header it saw)."""
    app = FastAPI()
    calls: list[str] = []

    @app.get("/{server}/{rest:path}")
    async def anything(request: Request, server: str, rest: str) -> JSONResponse:
        calls.append(f"{request.url.path} {request.headers.get('authorization')}")
        return JSONResponse(patient_resource() if rest.startswith("Patient") else searchset([]))

    with serve(app) as url:
        yield url, calls


@pytest.fixture(scope="module")
def base(signers: dict[str, Signer], fhir_server: tuple[str, list[str]]) -> Iterator[str]:
    fhir_url, _ = fhir_server
    keys = [signers["a"].jwk | {"iss": ISS_A}, signers["b"].jwk | {"iss": ISS_B}]
    settings = Settings(cds_issuers=(ISS_A, ISS_B), cds_jwks={"keys": keys}, public_url=PUBLIC,
                        cds_trust={ISS_A: {"fhir_servers": [f"{fhir_url}/fhir-a"]}})
    with serve(create_app(settings)) as url:
        yield url


def post(base: str, token: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/cds-services/{PATIENT_VIEW}", json=body or hook(), timeout=10,
                      headers={"Authorization": f"Bearer {token}", **headers})


AUD = f"{PUBLIC}/cds-services/{PATIENT_VIEW}"


def test_a_token_from_each_issuer_with_its_own_key_passes(base: str, signers: dict[str, Signer]) -> None:
    for who in ("a", "b"):
        resp = post(base, signers[who].token(AUD))
        assert resp.status_code == 412, resp.text  # authenticated; no data to assess


def test_a_key_of_issuer_a_never_verifies_a_token_claiming_issuer_b(base: str, signers: dict[str, Signer]) -> None:
    forged = signers["a"].token(AUD, iss=ISS_B)  # A's key, B's name
    resp = post(base, forged)
    assert resp.status_code == 401
    assert "issuer" in resp.json()["error"]["problem"] or "kid" in resp.json()["error"]["problem"]
    # even when the header names B's key id, A's signature does not verify with B's key
    forged_kid = signers["a"].token(AUD, iss=ISS_B, headers={"kid": "key-b"})
    assert post(base, forged_kid).status_code == 401


def test_aud_is_the_public_url_not_the_host_header(base: str, signers: dict[str, Signer]) -> None:
    local_aud = f"{base}/cds-services/{PATIENT_VIEW}"
    assert post(base, signers["a"].token(local_aud)).status_code == 401
    spoofed = post(base, signers["a"].token(AUD), **{"X-Forwarded-Host": "cds.hospital.example",
                                                      "X-Forwarded-Proto": "https"})
    assert spoofed.status_code == 412  # the forwarded headers change nothing; the public URL decides
    evil = post(base, signers["a"].token("http://evil.example/cds-services/" + PATIENT_VIEW),
                **{"X-Forwarded-Host": "evil.example"})
    assert evil.status_code == 401


def test_token_lifetime_is_capped(base: str, signers: dict[str, Signer]) -> None:
    assert post(base, signers["a"].token(AUD, exp_in=300)).status_code == 412
    long = post(base, signers["a"].token(AUD, exp_in=3600))
    assert long.status_code == 401 and "lifetime" in long.json()["error"]["problem"]


def test_fhir_server_must_be_on_the_issuers_allowlist(base: str, signers: dict[str, Signer],
                                                     fhir_server: tuple[str, list[str]]) -> None:
    fhir_url, calls = fhir_server
    auth = {"access_token": "ehr-secret", "token_type": "Bearer"}
    calls.clear()
    elsewhere = post(base, signers["a"].token(AUD), hook(fhirServer=f"{fhir_url}/fhir-evil", fhirAuthorization=auth))
    assert elsewhere.status_code == 412 and elsewhere.json()["error"]["field"] == "fhirServer"
    other_issuer = post(base, signers["b"].token(AUD), hook(fhirServer=f"{fhir_url}/fhir-a", fhirAuthorization=auth))
    assert other_issuer.status_code == 412  # A's server is not on B's list
    assert calls == [], "nothing was fetched and the EHR's token went nowhere"
    allowed = post(base, signers["a"].token(AUD), hook(fhirServer=f"{fhir_url}/fhir-a", fhirAuthorization=auth))
    assert allowed.status_code == 200, allowed.text
    assert calls and all(c.endswith("Bearer ehr-secret") and c.startswith("/fhir-a/") for c in calls)
