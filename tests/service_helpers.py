"""Helpers for the service tests: a real uvicorn on 127.0.0.1 (random free port) in a thread,
FHIR resources with dates relative to today, and JWT signing as a CDS client would."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port() -> int:
    """A port free on loopback right now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_json(url: str) -> Any:
    return httpx.get(url, timeout=5).json()


# ---------------------------------------------------------------------------------------------
# FHIR resources (dates relative to now, so the 90-day lookback keeps them)


def iso_days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def patient_resource(pid: str = "pat-1", gender: str = "female", birth: str = "1972-03-02") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def observation(oid: str, loinc: str, value: float, unit: str, days_ago: float = 1, pid: str = "pat-1",
                display: str = "") -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display or loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": iso_days_ago(days_ago),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources]}


def neutropenic_cbc(pid: str = "pat-1", anc: float = 0.4, days_ago: float = 1) -> list[dict[str, Any]]:
    """WBC 2.1 and ANC `anc` (10^9/L) drawn `days_ago` days ago."""
    return [observation("wbc-1", "6690-2", 2.1, "10*3/uL", days_ago, pid),
            observation("anc-1", "751-8", anc, "10*3/uL", days_ago, pid)]


def medication_request(mid: str, text: str, status: str = "active", pid: str = "pat-1",
                       intent: str = "order") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": intent,
            "medicationCodeableConcept": {"text": text}, "subject": {"reference": f"Patient/{pid}"},
            "authoredOn": iso_days_ago(0)[:10]}


def condition(cid: str, text: str, pid: str = "pat-1") -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "code": {"text": text},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "subject": {"reference": f"Patient/{pid}"}}


# ---------------------------------------------------------------------------------------------
# JWTs as a CDS client signs them


class Signer:
    """An EHR's signing key (ES384 or RS384) and its public JWK."""

    def __init__(self, alg: str = "ES384", kid: str | None = None, iss: str = "https://ehr.example.org") -> None:
        self.alg, self.iss = alg, iss
        self.kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        if alg == "ES384":
            self.private = ec.generate_private_key(ec.SECP384R1())
            public_jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**public_jwk, "kid": self.kid, "alg": alg, "use": "sig"}

    def token(self, aud: str, *, exp_in: int = 300, jti: str | None = None, iss: str | None = None,
              headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": iss or self.iss, "sub": "client-1", "aud": aud, "iat": now, "exp": now + exp_in,
                   "jti": jti or uuid.uuid4().hex, **claims}
        return jwt.encode(payload, self.private, algorithm=self.alg,
                          headers={"kid": self.kid, "typ": "JWT", **(headers or {})})


# ---------------------------------------------------------------------------------------------
# Tokens and stored data (issue 12: stored-patient endpoints need a bearer token)


def make_token(db: str, role: str, name: str | None = None) -> str:
    """A new API token in the store at `db` (what `leukowatch token create` does), before serving."""
    from leukowatch.io.store import open_store
    from leukowatch.service.auth import create_token

    con = open_store(db)
    try:
        con.execute("BEGIN TRANSACTION")
        token = create_token(con, name or f"{role}-{uuid.uuid4().hex[:6]}", role)
        con.execute("COMMIT")
    finally:
        con.close()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fhir_obs(pid: str, oid: str, loinc: str, value: float, when: str) -> dict[str, Any]:
    """A lab Observation in 10^3/uL at an exact time (for stored histories)."""
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org",
                              "code": "10*3/uL"}}


def cbc_bundle(pid: str, draws: list[tuple[str, float, float]], gender: str = "male") -> dict[str, Any]:
    """A collection Bundle: the Patient and, per draw (time, WBC, ANC), two Observations."""
    resources = [patient_resource(pid, gender, "1980-05-01")]
    for i, (when, wbc, anc) in enumerate(draws):
        resources += [fhir_obs(pid, f"{pid}-w{i}", "6690-2", wbc, when), fhir_obs(pid, f"{pid}-n{i}", "751-8", anc, when)]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
