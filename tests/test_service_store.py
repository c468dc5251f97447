"""Stored patients through the service (real uvicorn, real DuckDB file): ingest over REST (idempotent),
the history JSON, the PDF report, the patient page with its plot, and the population page."""

from __future__ import annotations

import io
import json

import duckdb
import httpx
import pytest
from service_helpers import bearer, make_token, medication_request, patient_resource, serve

from leukowatch.service import Settings, create_app

PID = "store-pat-1"
#: The read token (stored-patient endpoints and pages need one since issue 12), set by the fixture.
READ: dict[str, str] = {}


def _get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, headers=READ, **kwargs)  # type: ignore[arg-type]


def _obs(oid: str, loinc: str, value: float, when: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org",
                              "code": "10*3/uL"}}


def bundle() -> dict:
    """Three low ANCs over 13 weeks (chronic by the article's rule) while on clozapine."""
    draws = [("2026-01-05T08:00:00Z", 3.1, 1.1), ("2026-02-16T08:00:00Z", 2.9, 1.0),
             ("2026-04-06T08:00:00Z", 2.8, 0.9)]
    resources = [patient_resource(PID, "male", "1980-05-01")]
    for i, (when, wbc, anc) in enumerate(draws):
        resources += [_obs(f"w{i}", "6690-2", wbc, when), _obs(f"n{i}", "751-8", anc, when)]
    med = medication_request("m1", "clozapine 100 mg", pid=PID)
    med["authoredOn"] = "2025-11-20"
    resources.append(med)
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("store") / "store.duckdb"
    READ.update(bearer(make_token(str(db), "read")))
    ingest = {"Content-Type": "application/fhir+json"} | bearer(make_token(str(db), "ingest"))
    with serve(create_app(Settings(db=str(db), insecure_dev=True))) as url:
        body = json.dumps(bundle())
        first = httpx.post(f"{url}/api/ingest", content=body, headers=ingest)
        assert first.status_code == 200, first.text
        assert first.json()["stored"] == 6
        again = httpx.post(f"{url}/api/ingest", content=body, headers=ingest)
        assert again.json()["stored"] == 0 and again.json()["already_ingested"]
        yield url


def test_patients_and_history(base: str) -> None:
    patients = _get(f"{base}/api/patients").json()
    assert [p["patient_id"] for p in patients] == [PID]
    history = _get(f"{base}/api/patients/{PID}/history").json()
    assert history["chronicity"]["status"] == "chronic"
    assert _get(f"{base}/api/patients/nobody/history").status_code == 404


def test_report_pdf_has_the_verdict(base: str) -> None:
    from pypdf import PdfReader

    resp = _get(f"{base}/api/patients/{PID}/report.pdf", timeout=60)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(resp.content)).pages)
    assert "neutropenia" in text.lower() and "chronic" in text.lower()


def test_patient_page_with_plot(base: str) -> None:
    page = _get(f"{base}/patients/{PID}", timeout=60)
    assert page.status_code == 200
    assert 'id="verdict"' in page.text and "chronic" in page.text
    assert f"/api/patients/{PID}/report.pdf" in page.text
    png = _get(f"{base}/patients/{PID}/plot.png", timeout=60)
    assert png.content.startswith(b"\x89PNG")
    assert PID in _get(f"{base}/patients", timeout=120).text  # the list runs the population screen once


def test_population_page(base: str) -> None:
    page = _get(f"{base}/population", timeout=120)
    assert page.status_code == 200, page.text
    assert 'data-finding="neutropenia"' in page.text
    assert "clozapine" in page.text.lower()
    # the store is usable again afterwards (the screen borrowed the file)
    assert _get(f"{base}/api/patients").status_code == 200


def test_cds_card_links_to_the_stored_patient(base: str) -> None:
    from service_helpers import neutropenic_cbc, searchset

    body = {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": PID},
            "prefetch": {"patient": patient_resource(PID), "cbc": searchset(neutropenic_cbc(PID)),
                         "medications": searchset([]), "conditions": searchset([])}}
    cards = httpx.post(f"{base}/cds-services/leukowatch-patient-view", json=body).json()["cards"]
    assert any(link["url"] == f"{base}/patients/{PID}" for link in cards[0]["links"])


def test_the_patient_csv_never_carries_a_formula(tmp_path) -> None:
    """A lab's patient id such as =HYPERLINK(...) is exported as text, not a live spreadsheet formula."""
    import csv

    db = str(tmp_path / "s.duckdb")
    read, ingest = bearer(make_token(db, "read")), bearer(make_token(db, "ingest"))
    evil = '=HYPERLINK("http://evil.example")'
    with serve(create_app(Settings(db=db))) as url:
        stored = httpx.post(f"{url}/api/ingest", content=_hl7_for(evil, "CSV-1"), timeout=30,
                            headers={"Content-Type": "x-application/hl7-v2+er7"} | ingest).json()
        assert stored["stored"] == 1, stored
        text = httpx.get(f"{url}/patients.csv", headers=read).text
    ids = [row["patient_id"] for row in csv.DictReader(io.StringIO(text))]
    assert ids == ["'" + evil]


def _hl7_for(patient: str, control_id: str) -> str:
    return "\r".join([f"MSH|^~\\&|LAB|CITY|LW|WARD|20260301||ORU^R01|{control_id}|P|2.5",
                      f"PID|1||{patient}^^^CITY^MR||DOE^ALEX||19700101|F", "OBR|1",
                      "OBX|1|NM|751-8^ANC^LN||0.3|10*9/L|||||F|||20260301080000"])


def test_a_patient_id_with_a_slash_has_its_pages(tmp_path) -> None:
    """An MRN such as 12/3456 was stored and listed, but its page, plot, history and report were 404."""
    from urllib.parse import quote

    db = str(tmp_path / "s.duckdb")
    read, ingest = bearer(make_token(db, "read")), bearer(make_token(db, "ingest"))
    pid = "12/3456"
    with serve(create_app(Settings(db=db))) as url:
        assert httpx.post(f"{url}/api/ingest", content=_hl7_for(pid, "SLASH-1"), timeout=30,
                          headers={"Content-Type": "x-application/hl7-v2+er7"} | ingest).json()["stored"] == 1
        for path in (f"/patients/{quote(pid, safe='')}", f"/patients/{pid}/plot.png",
                     f"/api/patients/{pid}/history", f"/api/patients/{quote(pid, safe='')}/report.pdf"):
            assert httpx.get(f"{url}{path}", headers=read, timeout=60).status_code == 200, path
        assert httpx.get(f"{url}/api/patients/{pid}/history", headers=read).json()["patient"]["id"] == pid
        assert httpx.get(f"{url}/api/patients/12/999/history", headers=read).status_code == 404
    con = duckdb.connect(db, read_only=True)
    endpoints = {r[0] for r in con.execute("SELECT endpoint FROM audit WHERE patient_id = ?", [pid]).fetchall()}
    con.close()
    # the audit names the route template as before, never the converter or the id
    assert "/api/patients/{patient_id}/history" in endpoints and not any(":path" in e for e in endpoints)
