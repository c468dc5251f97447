"""Enterprise identity: OIDC JWT access tokens verified with PyJWT against a JWK Set served by a real
loopback uvicorn, SMART v2 scopes mapped to roles; and `leukowatch serve` refusing to listen beyond
loopback without authentication (issue 12 §1)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from service_helpers import Signer, bearer, free_port, make_token, serve

from leukowatch.service import Settings, create_app
from leukowatch.service.oidc import roles_from_scopes

ISSUER, AUDIENCE = "https://idp.hospital.example/realms/clinic", "leukowatch"


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[Signer, str]]:
    """The identity provider's signing key and its JWK Set URL (a real uvicorn on loopback)."""
    signer = Signer("RS384", kid="idp-1", iss=ISSUER)
    app = FastAPI()

    @app.get("/certs")
    async def certs() -> dict[str, Any]:
        return {"keys": [signer.jwk]}

    with serve(app) as url:
        yield signer, f"{url}/certs"


@pytest.fixture(scope="module")
def base(idp: tuple[Signer, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db = str(tmp_path_factory.mktemp("oidc") / "s.duckdb")
    api_token = make_token(db, "read", "api-reader")
    settings = Settings(db=db, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_url=idp[1])
    with serve(create_app(settings)) as url:
        yield url, api_token


def access_token(signer: Signer, scope: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dr.house", "iat": now, "exp": now + 300, "scope": scope,
               **claims}
    return jwt.encode(payload, signer.private, algorithm=signer.alg, headers={"kid": signer.kid})


def test_scope_mapping_the_smart_v2_way() -> None:
    assert roles_from_scopes(["user/Observation.rs"]) == {"read"}
    assert roles_from_scopes(["system/Observation.c"]) == {"ingest"}
    assert roles_from_scopes(["patient/Observation.read"]) == {"read"}  # SMART v1 spelling
    assert roles_from_scopes(["system/*.cruds"]) >= {"admin"}
    assert roles_from_scopes(["user/Patient.rs", "openid", "user/Observation.u"]) == set()


def test_read_scope_reads_and_cannot_ingest(base: tuple[str, str], idp: tuple[Signer, str]) -> None:
    url, _ = base
    token = access_token(idp[0], "openid user/Observation.rs")
    assert httpx.get(f"{url}/api/patients", headers=bearer(token)).status_code == 200
    denied = httpx.post(f"{url}/api/ingest", content="{}", headers=bearer(token) | {"Content-Type": "application/fhir+json"})
    assert denied.status_code == 403


def test_ingest_scope_ingests_and_cannot_read(base: tuple[str, str], idp: tuple[Signer, str]) -> None:
    url, _ = base
    token = access_token(idp[0], "system/Observation.c")
    assert httpx.get(f"{url}/api/patients", headers=bearer(token)).status_code == 403
    bundle = '{"resourceType":"Bundle","type":"collection","entry":[]}'
    ok = httpx.post(f"{url}/api/ingest", content=bundle, headers=bearer(token) | {"Content-Type": "application/fhir+json"})
    assert ok.status_code == 200, ok.text


def test_admin_scope_sees_the_audit_with_the_jwt_subject(base: tuple[str, str], idp: tuple[Signer, str]) -> None:
    url, _ = base
    reader = access_token(idp[0], "user/Observation.rs", sub="nurse.joy")
    httpx.get(f"{url}/api/patients", headers=bearer(reader)).raise_for_status()
    admin = access_token(idp[0], "system/*.cruds")
    rows = httpx.get(f"{url}/api/audit", params={"actor": "nurse.joy"}, headers=bearer(admin)).json()
    assert rows and rows[-1]["kind"] == "jwt" and rows[-1]["role"] == "read"


def test_api_tokens_still_work_beside_oidc(base: tuple[str, str]) -> None:
    url, api_token = base
    assert httpx.get(f"{url}/api/patients", headers=bearer(api_token)).status_code == 200


@pytest.mark.parametrize("case", ["wrong_aud", "wrong_iss", "expired", "unknown_key", "hs256", "no_role"])
def test_bad_access_tokens_are_refused(base: tuple[str, str], idp: tuple[Signer, str], case: str) -> None:
    url, _ = base
    signer = idp[0]
    stranger = Signer("RS384", kid="idp-1", iss=ISSUER)  # same kid, a key the IdP never published
    token = {
        "wrong_aud": lambda: access_token(signer, "user/Observation.rs", aud="someone-else"),
        "wrong_iss": lambda: access_token(signer, "user/Observation.rs", iss="https://evil.example"),
        "expired": lambda: access_token(signer, "user/Observation.rs", exp=int(time.time()) - 600),
        "unknown_key": lambda: access_token(stranger, "user/Observation.rs"),
        "hs256": lambda: jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60,
                                     "scope": "system/*.cruds"}, "a-shared-secret-of-32-bytes-or-more!!",
                                    algorithm="HS256", headers={"kid": "idp-1"}),
        "no_role": lambda: access_token(signer, "openid profile"),
    }[case]()
    resp = httpx.get(f"{url}/api/patients", headers=bearer(token))
    assert resp.status_code == (403 if case == "no_role" else 401), resp.text


# ---------------------------------------------------------------------------------------------
# serve beyond loopback


def _serve(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "leukowatch.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_serve_beyond_loopback_refuses_without_public_url_or_auth(tmp_path) -> None:
    db = str(tmp_path / "s.duckdb")
    port = str(free_port())
    no_url = _serve(["--db", db, "--host", "0.0.0.0", "--port", port])
    assert no_url.wait(timeout=60) == 2 and "--public-url" in no_url.stdout.read()
    no_auth = _serve(["--db", db, "--host", "0.0.0.0", "--port", port, "--public-url", "https://lw.ward.example"])
    assert no_auth.wait(timeout=60) == 2 and "without authentication" in no_auth.stdout.read()


def test_serve_beyond_loopback_with_a_token_closes_the_stateless_parts(tmp_path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "read")
    port = free_port()
    proc = _serve(["--db", db, "--host", "0.0.0.0", "--port", str(port), "--public-url", "https://lw.ward.example"])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                first = httpx.post(f"{url}/api/assess", json={"observations": [{"analyte": "wbc", "value": 2,
                                                                               "unit": "10*9/L"}]})
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert first.status_code == 401  # open on loopback only
        form = httpx.get(f"{url}/")
        assert form.status_code == 303 and form.headers["location"].startswith("/login")
        assert httpx.get(f"{url}/api/knowledge", headers=bearer(token)).status_code == 200
        assert httpx.get(f"{url}/api/knowledge", headers={"Host": "lw.ward.example"} | bearer(token)).status_code == 200
        assert httpx.get(f"{url}/api/knowledge", headers={"Host": "other.example"} | bearer(token)).status_code == 400
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "https://lw.ward.example/login?token=" in out
