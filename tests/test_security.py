"""Access control and the browser boundary under a real uvicorn on 127.0.0.1 (issue 12 §1-§3).

The role matrix (every stored-data endpoint x no token / read / ingest / admin), sign-in with a
session cookie, CSRF, CORS only on /cds-services*, the Host allow-list, security headers and the
audit rows each access leaves."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from service_helpers import bearer, cbc_bundle, make_token, serve

from leukowatch.service import Settings, create_app

PID = "sec-pat-1"
DRAWS = [("2026-01-05T08:00:00Z", 3.1, 1.1), ("2026-02-16T08:00:00Z", 2.9, 1.0)]
FHIR = {"Content-Type": "application/fhir+json"}


@dataclass
class Served:
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db = str(tmp_path_factory.mktemp("sec") / "store.duckdb")
    tokens = {role: make_token(db, role, f"{role}-user") for role in ("read", "ingest", "admin")}
    with serve(create_app(Settings(db=db))) as url:
        stored = httpx.post(f"{url}/api/ingest", content=json.dumps(cbc_bundle(PID, DRAWS)),
                            headers=FHIR | bearer(tokens["ingest"]))
        assert stored.status_code == 200, stored.text
        yield Served(url, tokens)


# ---------------------------------------------------------------------------------------------
# Role matrix

#: (method, path, role needed). Every /api endpoint that reads or writes stored data.
ENDPOINTS = [
    ("GET", "/api/patients", "read"),
    ("GET", f"/api/patients/{PID}/history", "read"),
    ("GET", f"/api/patients/{PID}/report.pdf", "read"),
    ("GET", "/api/worklist", "read"),
    ("POST", "/api/ingest", "ingest"),
    ("GET", "/api/audit", "admin"),
    ("GET", "/api/tokens", "admin"),
    ("POST", "/api/tokens", "admin"),
    ("DELETE", "/api/tokens/{name}", "admin"),
]


def _call(served: Served, method: str, path: str, token: str | None, n: int) -> httpx.Response:
    headers = bearer(token) if token else {}
    if path == "/api/ingest":
        body = cbc_bundle(f"matrix-{n}", [("2026-03-01T08:00:00Z", 3.0, 1.2)])
        return httpx.post(served.url + path, content=json.dumps(body), headers=headers | FHIR)
    if method == "POST":
        return httpx.post(served.url + path, json={"name": f"made-{n}", "role": "read"}, headers=headers)
    if method == "DELETE":
        # a token to revoke, made by the admin
        httpx.post(f"{served.url}/api/tokens", json={"name": f"doomed-{n}", "role": "read"},
                   headers=bearer(served.tokens["admin"])).raise_for_status()
        return httpx.delete(served.url + path.format(name=f"doomed-{n}"), headers=headers)
    return httpx.get(served.url + path, headers=headers, timeout=60)


@pytest.mark.parametrize("method,path,needed", ENDPOINTS)
@pytest.mark.parametrize("role", [None, "read", "ingest", "admin"])
def test_role_matrix(served: Served, method: str, path: str, needed: str, role: str | None,
                     request: pytest.FixtureRequest) -> None:
    n = abs(hash(request.node.name)) % 10**8
    resp = _call(served, method, path, served.tokens[role] if role else None, n)
    if role is None:
        assert resp.status_code == 401, resp.text
        assert resp.headers["www-authenticate"].startswith("Bearer")
    elif role == needed or role == "admin":
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["field"] == "Authorization"


def test_unknown_and_malformed_tokens_get_401(served: Served) -> None:
    for header in ("Bearer lw_not-a-token", "Basic dXNlcjpwYXNz", "Bearer"):
        resp = httpx.get(f"{served.url}/api/patients", headers={"Authorization": header})
        assert resp.status_code == 401 and "www-authenticate" in resp.headers


def test_stateless_parts_stay_open_on_loopback(served: Served) -> None:
    body = {"patient": {"sex": "female", "age_years": 40},
            "observations": [{"analyte": "wbc", "value": 2.0, "unit": "10*9/L"}]}
    assert httpx.post(f"{served.url}/api/assess", json=body).status_code == 200
    assert httpx.get(f"{served.url}/api/knowledge").status_code == 200
    assert httpx.get(f"{served.url}/").status_code == 200
    assert httpx.get(f"{served.url}/docs").status_code == 200


def test_revoked_token_stops_working(served: Served) -> None:
    admin = bearer(served.tokens["admin"])
    made = httpx.post(f"{served.url}/api/tokens", json={"name": "short-lived", "role": "read"}, headers=admin).json()
    assert httpx.get(f"{served.url}/api/patients", headers=bearer(made["token"])).status_code == 200
    with httpx.Client(base_url=served.url, timeout=60) as browser:
        _sign_in(browser, made["token"])
        assert browser.get(f"/patients/{PID}").status_code == 200
        assert httpx.delete(f"{served.url}/api/tokens/short-lived", headers=admin).status_code == 200
        assert browser.get(f"/patients/{PID}").status_code == 303  # its session ended with it
    assert httpx.get(f"{served.url}/api/patients", headers=bearer(made["token"])).status_code == 401
    listed = {t["name"]: t for t in httpx.get(f"{served.url}/api/tokens", headers=admin).json()}
    assert listed["short-lived"]["state"] == "revoked" and "token" not in listed["short-lived"]


# ---------------------------------------------------------------------------------------------
# Sign-in, sessions, CSRF


def test_patient_pages_send_an_unsigned_browser_to_sign_in(served: Served) -> None:
    for path in ("/patients", f"/patients/{PID}", "/population"):
        resp = httpx.get(served.url + path)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")


@contextlib.contextmanager
def _signed_in(served: Served, role: str = "read") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        yield _sign_in(client, served.tokens[role])


def _sign_in(client: httpx.Client, token: str) -> httpx.Client:
    resp = client.get("/login", params={"token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/patients"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http on loopback; behind https it is Secure
    return client


def test_sign_in_link_sets_a_session_and_sign_out_needs_csrf(served: Served) -> None:
    with _signed_in(served) as client:
        page = client.get(f"/patients/{PID}")
        assert page.status_code == 200 and PID in page.text
        assert page.headers["cache-control"] == "no-store"
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, "the signed-in page carries a sign-out form with a CSRF token"
        assert client.post("/logout").status_code == 403  # no CSRF token
        assert client.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
        assert client.post("/logout", data={"csrf_token": csrf.group(1)}).status_code == 303
        assert client.get(f"/patients/{PID}").status_code == 303  # signed out
    rows = httpx.get(f"{served.url}/api/audit", params={"actor": "read-user"}, headers=bearer(served.tokens["admin"])).json()
    assert any(r["action"] == "GET /patients/{patient_id}" and r["kind"] == "session" and r["patient_id"] == PID
               for r in rows), "a page view is audited as the signed-in user"
    assert any(r["action"] == "session.start" for r in rows)


def test_sign_in_form_needs_its_csrf_cookie_and_refuses_bad_tokens(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        form = client.get("/login")
        field = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        assert client.post("/login", data={"token": "lw_wrong", "csrf_token": field}).status_code == 401
        form = client.get("/login")
        field = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        ok = client.post("/login", data={"token": served.tokens["read"], "csrf_token": field, "next": "//evil.example"})
        assert ok.status_code == 303 and ok.headers["location"] == "/patients"  # no open redirect
    with httpx.Client(base_url=served.url) as fresh:  # a foreign page: no login-CSRF cookie
        assert fresh.post("/login", data={"token": served.tokens["read"], "csrf_token": "x"}).status_code == 403


def test_session_cannot_ingest_even_with_csrf(served: Served) -> None:
    """A form or text/plain post to /api/ingest without a bearer token is refused."""
    with _signed_in(served, "admin") as client:
        hl7 = "MSH|^~\\&|LAB|H|LW|H|20260101||ORU^R01|1|P|2.5\rPID|||x-1\r"
        assert client.post("/api/ingest", content=hl7, headers={"Content-Type": "text/plain"}).status_code == 403
        assert client.post("/api/ingest", data={"a": "b"}).status_code == 403
    assert httpx.post(f"{served.url}/api/ingest", content="MSH|", headers={"Content-Type": "text/plain"}).status_code == 401


# ---------------------------------------------------------------------------------------------
# Browser boundary


def test_cors_only_on_cds_services(served: Served) -> None:
    origin = {"Origin": "https://evil.example"}
    for path in ("/api/patients", "/api/assess", "/api/knowledge", "/patients", "/"):
        auth = bearer(served.tokens["read"]) if path.startswith("/api") else {}
        resp = httpx.get(served.url + path, headers=origin | auth, timeout=60)
        assert not any(h.lower().startswith("access-control-") for h in resp.headers), path
        pre = httpx.options(served.url + path, headers=origin | {"Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers, path
    disc = httpx.get(f"{served.url}/cds-services", headers=origin)
    assert disc.headers["access-control-allow-origin"] == "*"
    pre = httpx.options(f"{served.url}/cds-services/leukowatch-patient-view",
                        headers=origin | {"Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("host", ["evil.example", "rebind.attacker.test:8000", "127.0.0.1.nip.io"])
def test_foreign_host_gets_400(served: Served, host: str) -> None:
    resp = httpx.get(f"{served.url}/api/patients", headers={"Host": host} | bearer(served.tokens["read"]))
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "Host"


def test_loopback_names_and_allowed_host_pass(tmp_path) -> None:
    with serve(create_app(Settings(db=str(tmp_path / "s.duckdb"), allowed_hosts=("leuko.ward.example",)))) as url:
        for host in ("localhost", "127.0.0.1", "leuko.ward.example:443", "LOCALHOST:1"):
            assert httpx.get(f"{url}/api/knowledge", headers={"Host": host}).status_code == 200, host
        assert httpx.get(f"{url}/api/knowledge", headers={"Host": "other.ward.example"}).status_code == 400


def test_security_headers(served: Served) -> None:
    page = httpx.get(f"{served.url}/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cross-origin-resource-policy"] == "same-origin"  # no embedding from other sites
    assert "cross-origin-resource-policy" not in httpx.get(f"{served.url}/cds-services").headers
    assert "<script>" not in page.text and "onclick" not in page.text
    pdf = httpx.get(f"{served.url}/api/patients/{PID}/report.pdf", headers=bearer(served.tokens["read"]), timeout=60)
    assert pdf.headers["cache-control"] == "no-store"
    assert "no-store" not in httpx.get(f"{served.url}/static/style.css").headers.get("cache-control", "")
    docs = httpx.get(f"{served.url}/docs")
    assert "'sha256-" in docs.headers["content-security-policy"]  # Swagger's own inline start-up script only


# ---------------------------------------------------------------------------------------------
# Audit


def test_reads_and_writes_leave_audit_rows_without_values(served: Served) -> None:
    reader, admin = bearer(served.tokens["read"]), bearer(served.tokens["admin"])
    assert httpx.get(f"{served.url}/api/patients/{PID}/history", headers=reader).status_code == 200
    assert httpx.get(f"{served.url}/api/patients/nobody-here/history", headers=reader).status_code == 404
    assert httpx.get(f"{served.url}/api/audit", headers=reader).status_code == 403
    rows = httpx.get(f"{served.url}/api/audit", params={"patient": PID}, headers=admin).json()
    actions = {(r["actor"], r["action"], r["outcome"]) for r in rows}
    assert ("ingest-user", "ingest", "ok") in actions
    assert ("read-user", "GET /api/patients/{patient_id}/history", "ok") in actions
    missing = httpx.get(f"{served.url}/api/audit", params={"patient": "nobody-here"}, headers=admin).json()
    assert [r["outcome"] for r in missing] == ["not-found"]
    denied = httpx.get(f"{served.url}/api/audit", params={"actor": "read-user"}, headers=admin).json()
    assert any(r["outcome"] == "denied" and r["endpoint"] == "/api/audit" for r in denied)
    assert all(set(r) == {"seq", "time", "actor", "role", "kind", "action", "patient_id", "endpoint", "outcome"}
               for r in rows)
    text = json.dumps([{k: v for k, v in r.items() if k != "time"} for r in rows])
    assert "1.1" not in text and "3.1" not in text  # no values (the times may contain any digits)
    later = httpx.get(f"{served.url}/api/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin).json()
    assert later == []
    garbage = httpx.post(f"{served.url}/api/ingest", content='{"resourceType": 5}', headers=FHIR | bearer(served.tokens["ingest"]))
    assert garbage.status_code == 422
    refused = httpx.get(f"{served.url}/api/audit", params={"actor": "ingest-user"}, headers=admin).json()
    assert refused[-1]["action"] == "ingest" and refused[-1]["outcome"] == "rejected"


def test_audit_as_fhir_audit_events(served: Served) -> None:
    bundle = httpx.get(f"{served.url}/api/audit", params={"patient": PID, "format": "fhir"},
                       headers=bearer(served.tokens["admin"])).json()
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
    event = bundle["entry"][0]["resource"]
    assert event["resourceType"] == "AuditEvent" and event["action"] in ("C", "R")
    assert {"reference": f"Patient/{PID}"} in [e["what"] for e in event["entity"]]


def test_an_unexpected_error_is_logged_without_its_message(tmp_path, capfd: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Starlette re-raises after its 500 handler and uvicorn would print the exception's message (which
    may quote a value); the browser boundary logs type, route and frames only."""
    app = create_app(Settings(db=str(tmp_path / "s.duckdb")))
    value = 0.0373

    @app.get("/crash/{patient_id}")
    async def crash(patient_id: str) -> None:
        raise ValueError(f"value {value} of {patient_id}")

    with serve(app) as url:
        resp = httpx.get(f"{url}/crash/MRN-55501")
    assert resp.status_code == 500 and resp.json() == {"error": {"field": None, "problem": "internal error"}}
    assert resp.headers["x-content-type-options"] == "nosniff"
    logged = capfd.readouterr().err + caplog.text
    assert "ValueError" in logged and "/crash/{patient_id}" in logged
    assert "MRN-55501" not in logged and "0.0373" not in logged


def test_behind_https_the_cookie_is_secure_and_hsts_is_sent(tmp_path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "read")
    with serve(create_app(Settings(db=db, public_url="https://lw.ward.example"))) as url:
        signed = httpx.get(f"{url}/login", params={"token": token})
        assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]
        assert signed.headers["strict-transport-security"].startswith("max-age=")
        proxied = httpx.get(f"{url}/api/knowledge", headers={"Host": "lw.ward.example"})
        assert proxied.status_code == 200  # the public URL's host is an allowed name
