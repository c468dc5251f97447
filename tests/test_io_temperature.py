"""A body temperature sent with the lab data (FHIR vital-signs Observation, HL7 OBX with a LOINC
body-temperature code) reaches the febrile-neutropenia rule: through `leukowatch assess FILE`, the
REST endpoint, CDS Hooks prefetch, and into the store's `temperatures` table on ingest. Real
components throughout: the CLI as a subprocess, uvicorn on loopback, a DuckDB file."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from service_helpers import (
    Signer,
    bearer,
    make_token,
    neutropenic_cbc,
    observation,
    patient_resource,
    searchset,
    serve,
)

from leukowatch.assess import assess
from leukowatch.io import read_path, read_text, request_from_path
from leukowatch.knowledge import KnowledgeError, load_table, thaw
from leukowatch.knowledge.validate import validate_tables
from leukowatch.service import Settings, create_app
from leukowatch.service.cds import PATIENT_VIEW

DATA = Path(__file__).parent / "data"
BUNDLE = DATA / "fever_neutropenia.fhir.json"
ORU = DATA / "fever_neutropenia.hl7"
TEMP_ENTRY = 3  # entry[3] of BUNDLE is the 38.9 °C Observation


def _cli_assess(path: Path) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "leukowatch.cli", "assess", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _febrile(assessment: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in assessment["alerts"] if a["code"] == "febrile_neutropenia"]


def _bundle_with(**quantity: Any) -> dict[str, Any]:
    """BUNDLE with the temperature Observation's valueQuantity / effectiveDateTime changed."""
    data = json.loads(BUNDLE.read_text())
    temp = data["entry"][TEMP_ENTRY]["resource"]
    when = quantity.pop("effectiveDateTime", None)
    if when is not None:
        temp["effectiveDateTime"] = when
    if quantity.pop("undated", False):
        del temp["effectiveDateTime"]
    temp["valueQuantity"].update(quantity)
    return data


def _assess_bundle(data: dict[str, Any], tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    path = tmp_path / "bundle.fhir.json"
    path.write_text(json.dumps(data))
    request = request_from_path(path)
    return assess(request), request


@pytest.mark.parametrize("path", [BUNDLE, ORU], ids=["fhir", "hl7"])
def test_assess_file_with_a_same_day_fever_is_febrile_neutropenia(path: Path) -> None:
    a = _cli_assess(path)
    [alert] = _febrile(a)
    assert alert["level"] == "critical" and "38.9 °C" in alert["message"]
    assert any("38.9 °C taken 2026-03-10T07:40:00+00:00" in w and "day of the latest blood draw" in w
               for w in a["warnings"])
    assert not any("no temperature was given" in f.get("note", "") for f in a.get("findings", []))


def test_the_readers_keep_temperatures_apart_from_the_counts() -> None:
    for result in (read_path(BUNDLE), read_path(ORU)):
        assert [o.analyte for o in result.observations] == ["wbc", "neutrophils"]
        [temp] = result.temperatures
        assert temp.celsius == pytest.approx(38.9) and temp.time.isoformat() == "2026-03-10T07:40:00+00:00"
        assert temp.patient_id in ("fn-1", "FN-2")
        assert not result.rejects and result.reconciles()  # a used temperature is no reject


def test_fahrenheit_is_converted(tmp_path: Path) -> None:
    a, request = _assess_bundle(_bundle_with(value=102, code="[degF]", unit="°F"), tmp_path)
    assert request["temperature_c"] == pytest.approx((102 - 32) * 5 / 9)
    assert any(al.code == "febrile_neutropenia" and al.level == "critical" for al in a.alerts)
    assert any("38.9 °C" in w for w in request["warnings"])


def test_a_temperature_the_day_before_the_draw_is_not_used(tmp_path: Path) -> None:
    a, request = _assess_bundle(_bundle_with(effectiveDateTime="2026-03-09T22:00:00Z"), tmp_path)
    assert "temperature_c" not in request
    assert not any(al.code == "febrile_neutropenia" for al in a.alerts)
    assert any("is not from 2026-03-10, the day of the latest blood draw: not used" in w for w in a.warnings)


def test_the_highest_temperature_of_the_draw_day_is_used(tmp_path: Path) -> None:
    data = json.loads(BUNDLE.read_text())
    second = copy.deepcopy(data["entry"][TEMP_ENTRY])
    second["resource"]["id"] = "temp-2"
    second["resource"]["effectiveDateTime"] = "2026-03-10T18:00:00Z"  # after the draw, the same day
    second["resource"]["valueQuantity"]["value"] = 37.2
    data["entry"].append(second)
    _, request = _assess_bundle(data, tmp_path)
    assert request["temperature_c"] == pytest.approx(38.9)
    assert any("the highest of 2 on 2026-03-10" in w for w in request["warnings"])


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"value": 389}, "valueQuantity.value", "389 °C is not a body temperature (expected 25-45 °C)"),
    ({"value": 38.9, "code": "K", "unit": "K"}, "valueQuantity.unit", "'K' is not a temperature unit"),
    ({"undated": True}, "effectiveDateTime", "body temperature without a time"),
])
def test_an_unusable_temperature_is_a_reject_with_its_reason(tmp_path: Path, change: dict[str, Any], field: str,
                                                             reason: str) -> None:
    data = _bundle_with(**change)
    result = read_text(json.dumps(data), "fhir", "t")
    [reject] = result.rejects
    assert reject.locator == f"entry[{TEMP_ENTRY}].resource.{field}" and reason in reject.reason
    assert reject.kind == "invalid" and not result.temperatures and result.reconciles()
    a, request = _assess_bundle(data, tmp_path)  # the counts are still assessed, the caller is told
    assert "temperature_c" not in request
    assert any(reason in w and "(left out)" in w for w in a.warnings)
    assert not any(al.code == "febrile_neutropenia" for al in a.alerts)


def test_an_hl7_temperature_in_fahrenheit_and_an_implausible_one() -> None:
    text = ORU.read_text().replace("|38.9|Cel|", "|102|[degF]|")
    [temp] = read_text(text, "hl7", "t").temperatures
    assert temp.celsius == pytest.approx(38.889, abs=1e-3)
    result = read_text(ORU.read_text().replace("|38.9|Cel|", "|3.89|Cel|"), "hl7", "t")
    [reject] = result.rejects
    assert reject.locator == "OBX[3]-5" and "3.89 °C is not a body temperature" in reject.reason
    assert result.reconciles()


def test_a_request_with_its_own_temperature_keeps_it() -> None:
    from leukowatch.io.result import use_draw_day_temperature

    request = {"temperature_c": 36.8}
    assert use_draw_day_temperature(request, read_path(BUNDLE)) == []
    assert request == {"temperature_c": 36.8}


@pytest.fixture(scope="module")
def service() -> str:
    with serve(create_app(Settings(max_body_bytes=100_000))) as url:
        yield url


@pytest.mark.parametrize(("path", "ctype"), [(BUNDLE, "application/fhir+json"), (ORU, "x-application/hl7-v2+er7")],
                         ids=["fhir", "hl7"])
def test_rest_assess_with_a_same_day_fever(service: str, path: Path, ctype: str) -> None:
    resp = httpx.post(f"{service}/api/assess", content=path.read_bytes(), headers={"Content-Type": ctype}, timeout=30)
    assert resp.status_code == 200, resp.text
    a = resp.json()
    assert a["verdict"].startswith("EMERGENCY: febrile neutropenia")
    assert [al["level"] for al in _febrile(a)] == ["critical"]


def test_cds_hooks_prefetched_temperature_raises_the_febrile_neutropenia_card() -> None:
    signer = Signer("ES384")
    iss = "https://ehr.example.org"
    cbc = neutropenic_cbc(anc=0.3)
    temp = observation("temp-1", "8310-5", 38.9, "Cel")
    temp["category"][0]["coding"][0]["code"] = "vital-signs"
    temp["effectiveDateTime"] = cbc[0]["effectiveDateTime"]  # taken at the draw
    settings = Settings(cds_issuers=(iss,), cds_jwks={"keys": [signer.jwk]})
    with serve(create_app(settings)) as base:
        url = f"{base}/cds-services/{PATIENT_VIEW}"
        body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {"userId": "Practitioner/1", "patientId": "pat-1"},
                "prefetch": {"patient": patient_resource(), "cbc": searchset(cbc), "temperatures": searchset([temp]),
                             "medications": searchset([]), "conditions": searchset([])}}
        resp = httpx.post(url, json=body, headers=bearer(signer.token(url, iss=iss)), timeout=30)
        discovery = httpx.get(f"{base}/cds-services", timeout=10).json()
    assert resp.status_code == 200, resp.text
    [card] = resp.json()["cards"]
    assert card["indicator"] == "critical"
    assert "febrile neutropenia" in card["summary"].lower() and "38.9 °C" in card["detail"]
    [service_spec] = [s for s in discovery["services"] if s["id"] == PATIENT_VIEW]
    assert "http://loinc.org|8310-5" in service_spec["prefetch"]["temperatures"]


def test_cli_ingest_stores_the_temperature_once(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    for _ in range(2):
        run = subprocess.run([sys.executable, "-m", "leukowatch.cli", "ingest", "--db", str(db), str(BUNDLE), str(ORU)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT patient_id, time, temperature_c FROM temperatures ORDER BY patient_id").fetchall()
    con.close()
    assert [(pid, t.isoformat(), c) for pid, t, c in rows] == [
        ("FN-2", "2026-03-10T07:40:00+00:00", 38.9), ("fn-1", "2026-03-10T07:40:00+00:00", 38.9)]


def test_service_ingest_stores_the_temperature(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    headers = {"Content-Type": "application/fhir+json"} | bearer(make_token(str(db), "ingest"))
    with serve(create_app(Settings(db=str(db), insecure_dev=True))) as url:
        resp = httpx.post(f"{url}/api/ingest", content=BUNDLE.read_bytes(), headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["read"] == resp.json()["accepted"] + resp.json()["rejected"]
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT patient_id, temperature_c FROM temperatures").fetchall() == [("fn-1", 38.9)]
    con.close()


def test_a_temperature_without_a_patient_is_a_store_reject(tmp_path: Path) -> None:
    from leukowatch.io.store import open_store, write_result

    data = json.loads(BUNDLE.read_text())
    data["entry"] = [e for e in data["entry"] if e["resource"]["resourceType"] != "Patient"]
    for e in data["entry"]:
        del e["resource"]["subject"]
    result = read_text(json.dumps(data), "fhir", "t")
    con = open_store(tmp_path / "s.duckdb")
    summary = write_result(con, result, "t", "sha-x", "fhir")
    assert summary.read == summary.accepted + summary.rejected
    assert any(r.reason.startswith("body temperature without a patient identifier") for r in summary.rejects)
    assert con.execute("SELECT count(*) FROM temperatures").fetchone() == (0,)
    con.close()


def test_a_temperature_alone_is_kept_without_listing_its_person(tmp_path: Path) -> None:
    """A message holding only a temperature (vitals from another system, before any count) keeps it for the
    person's draws but creates no patient: the list would show a person whose page has nothing to show.
    Once a count is stored, the person is listed and judged with that day's temperature."""
    from leukowatch.io.store import load_patient_request, open_store, write_result

    data = json.loads(BUNDLE.read_text())
    counts = copy.deepcopy(data)
    data["entry"] = [e for e in data["entry"] if e["resource"]["resourceType"] != "Observation"
                     or e["resource"]["code"]["coding"][0]["code"] == "8310-5"]
    con = open_store(tmp_path / "s.duckdb")
    try:
        write_result(con, read_text(json.dumps(data), "fhir", "t"), "t", "sha-t", "fhir")
        assert con.execute("SELECT count(*) FROM temperatures").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM patients").fetchone() == (0,)
        write_result(con, read_text(json.dumps(counts), "fhir", "c"), "c", "sha-c", "fhir")
        assert con.execute("SELECT patient_id FROM patients").fetchall() == [("fn-1",)]
        assert load_patient_request(con, "fn-1")["temperature_c"] == pytest.approx(38.9)
    finally:
        con.close()


def test_a_unit_spelled_as_both_scales_fails_validation() -> None:
    tables = {"temperature": thaw(load_table("temperature"))}
    tables["temperature"]["units"]["fahrenheit"] = ["[degF]", "cel"]
    with pytest.raises(KnowledgeError, match="listed as celsius too"):
        validate_tables(tables, "knowledge", {})


def test_a_stored_patient_is_judged_with_the_stored_same_day_temperature(tmp_path: Path) -> None:
    from leukowatch.io.store import load_patient_request, open_store, write_result

    con = open_store(tmp_path / "s.duckdb")
    write_result(con, read_path(BUNDLE), str(BUNDLE), "sha-bundle", "fhir")
    request = load_patient_request(con, "fn-1")
    con.close()
    assert request["temperature_c"] == pytest.approx(38.9)
    assert any("stored from fever_neutropenia.fhir.json" in w for w in request["warnings"])
    assert [al.level for al in assess(request).alerts if al.code == "febrile_neutropenia"] == ["critical"]


def test_the_lab_feed_judges_a_result_message_with_its_temperature(tmp_path: Path) -> None:
    from feed_helpers import exchange, feed_service, oru, read, wait_judged

    def fever(when: str) -> str:
        return f"OBX|3|NM|8310-5^Body temperature^LN||38.9|Cel|||||F|||{when}"

    db = tmp_path / "store.duckdb"
    febrile = oru("TX-1", patient="TX", when="202611050800", wbc=1.1, anc=0.3) + "\r" + fever("202611050730")
    next_day = oru("TX-2", patient="TX", when="202611060800", wbc=1.1, anc=0.3)  # no temperature that day
    with feed_service(db) as (_, app, port):
        assert [a["code"] for a in exchange(port, [febrile])] == ["AA"]
        wait_judged(app)
        items = read(app, "SELECT code, level FROM worklist WHERE patient_id = 'TX'")
        assert [a["code"] for a in exchange(port, [next_day])] == ["AA"]
        wait_judged(app)
        state = read(app, "SELECT alerts FROM feed_alert_state WHERE patient_id = 'TX'")
        stored = read(app, "SELECT temperature_c FROM temperatures WHERE patient_id = 'TX'")
    assert ("febrile_neutropenia", "critical") in items
    assert "febrile_neutropenia" not in state[0][0]  # yesterday's fever is not carried to today's count
    assert stored == [(38.9,)]
