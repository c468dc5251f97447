"""The clinical case table (cases.toml) run through `assess`, and a few through the CLI.

Each case says what a careful haematologist expects; this file only compares. Every case is also
held to the rules that hold everywhere: the patient text never instructs a medicine change, never
tells someone with a fever to watch for one, and a count with nothing low is never called low.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from leukowatch.assess import assess
from leukowatch.knowledge import load_table
from leukowatch.model import InputError
from leukowatch.rules.grading import criteria_versions

CASES_FILE = Path(__file__).with_name("cases.toml")
CASES: list[dict[str, Any]] = tomllib.loads(CASES_FILE.read_text(encoding="utf-8"))["case"]

#: Label actions that belong to the prescriber (issue 11 §5): never in patient-facing text.
MEDICINE_ACTIONS = re.compile(r"\b(stop(ping)?|interrupt(ing)?|discontinu\w*|rechallenge\w*|withhold\w*)\b", re.I)
WATCH_FOR_FEVER = re.compile(r"watch (out )?for (a )?fever", re.I)
LOW_FINDINGS = {"leukopenia", "neutropenia", "lymphocytopenia", "monocytopenia", "anemia", "thrombocytopenia",
                "pancytopenia"}


def _param(case: dict[str, Any]) -> Any:
    marks = [pytest.mark.xfail(strict=False, reason=case["xfail"])] if "xfail" in case else []
    return pytest.param(case, id=case["id"], marks=marks)


def _patient_text(out: dict[str, Any]) -> str:
    advice = out.get("advice") or {}
    parts = [*out.get("patient_summary", []), *(a.get("patient_message", "") for a in out["alerts"])]
    parts += [text for section in advice.values() for text in section]
    return "\n".join(parts)


def _clinician_text(out: dict[str, Any]) -> str:
    parts = [*out.get("clinician_summary", []), *(a["message"] for a in out["alerts"])]
    parts += [note for f in out["findings"] for note in f.get("notes", [])]
    parts += [f["threshold"] for f in out["findings"]]
    parts += (out.get("chronicity") or {}).get("evidence", [])
    return "\n".join(parts)


def _medicines(out: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """(current, not current, chemotherapy) generic names among the possible causes, in any list."""
    current, not_current, chemo = set(), set(), set()
    for key, items in (out.get("possible_causes") or {}).items():
        for item in items or []:
            if not isinstance(item, dict) or "generic" not in item:
                continue
            name = item["generic"].lower()
            if item.get("not_current") or "not_current" in key:
                not_current.add(name)
            else:
                current.add(name)
            if item.get("chemotherapy"):
                chemo.add(name)
    return current, not_current, chemo


def _contains_all(text: str, phrases: list[str], where: str) -> None:
    for phrase in phrases:
        assert phrase.lower() in text.lower(), f"{where} lacks {phrase!r}:\n{text}"


def _contains_none(text: str, phrases: list[str], where: str) -> None:
    for phrase in phrases:
        assert phrase.lower() not in text.lower(), f"{where} has {phrase!r}:\n{text}"


def check(case: dict[str, Any], out: dict[str, Any]) -> None:
    """Compare one assessment (its JSON form) with the case's expectations."""
    findings = {f["code"]: f for f in out["findings"]}
    alerts = {a["code"]: a["level"] for a in out["alerts"]}
    if "findings" in case:
        assert set(findings) == set(case["findings"]), f"findings {sorted(findings)}"
    for code in case.get("findings_include", []):
        assert code in findings, f"findings {sorted(findings)} lack {code}"
    for code in case.get("findings_absent", []):
        assert code not in findings, f"unexpected finding {code}"
    for code, expected in case.get("grades", {}).items():
        assert code in findings, f"no {code} finding to grade; findings {sorted(findings)}"
        assert (findings[code]["grade"] or 0) == expected, f"{code}: grade {findings[code]['grade']}, expected {expected}"
    for code, highest in case.get("max_grades", {}).items():
        if code in findings:
            assert (findings[code]["grade"] or 0) <= highest, f"{code} graded {findings[code]['grade']}"
    if "alerts" in case:
        assert alerts == case["alerts"], f"alerts {alerts}"
    for code, level in case.get("alerts_include", {}).items():
        assert alerts.get(code) == level, f"alerts {alerts}: expected {code} {level}"
    for code in case.get("alerts_absent", []):
        assert code not in alerts, f"unexpected alert {code} ({alerts[code]})"
    patient, clinician, verdict = _patient_text(out), _clinician_text(out), out.get("verdict", "")
    _contains_all(patient, case.get("patient_must", []), "patient text")
    _contains_none(patient, case.get("patient_must_not", []), "patient text")
    _contains_all(clinician, case.get("clinician_must", []), "clinician text")
    _contains_none(clinician, case.get("clinician_must_not", []), "clinician text")
    _contains_all(verdict, case.get("verdict_must", []), "verdict")
    _contains_none(verdict, case.get("verdict_must_not", []), "verdict")
    _contains_all("\n".join(out.get("warnings", [])), case.get("warnings_must", []), "warnings")
    if case.get("no_low_advice"):
        advice = out.get("advice") or {}
        assert not advice.get("treatment") and not advice.get("home_care"), f"advice given: {advice}"
    current, not_current, chemo = _medicines(out)
    for name in case.get("current_medicines", []):
        assert name.lower() in current, f"{name} not a current cause: {current}"
    for name in case.get("not_current_medicines", []):
        assert name.lower() in not_current and name.lower() not in current, \
            f"{name}: current {current}, not current {not_current}"
    for name in case.get("chemotherapy_medicines", []):
        assert name.lower() in chemo, f"{name} not chemotherapy: {chemo}"
    if "criteria" in case:
        assert out["criteria"] == case["criteria"]
        assert all(f["criteria"] in (None, case["criteria"]) for f in out["findings"])
    if "criteria_contains" in case:
        assert case["criteria_contains"] in out["criteria"], out["criteria"]
    if "chronicity" in case:
        assert out["chronicity"]["status"] == case["chronicity"]
    _holds_everywhere(case, out, findings, patient, verdict)


def _holds_everywhere(case: dict[str, Any], out: dict[str, Any], findings: dict[str, Any], patient: str,
                      verdict: str) -> None:
    action = MEDICINE_ACTIONS.search(patient)
    assert action is None, f"patient text instructs a medicine change ({action.group(0)!r}):\n{patient}"
    request = case["request"]
    febrile = ((request.get("temperature_c") or 0) >= 38.0 or (request.get("temperature_f") or 0) >= 100.4
               or any("fever" in s.lower() for s in request.get("symptoms", [])))
    if febrile:
        assert not WATCH_FOR_FEVER.search(patient), f"tells a febrile person to watch for fever:\n{patient}"
    if LOW_FINDINGS.isdisjoint(findings):
        assert not re.search(r"\blow\b", verdict, re.I), f"nothing is low, yet the verdict says so: {verdict}"


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    request = copy.deepcopy(case["request"])
    if "error_field" in case:
        with pytest.raises(InputError) as err:
            assess(request)
        assert err.value.field == case["error_field"], err.value
        _contains_all(str(err.value), case.get("error_must", []), "error")
        return
    check(case, assess(request).to_dict())


@pytest.mark.parametrize("case", [_param(c) for c in CASES if c.get("cli")])
def test_case_through_cli(case: dict[str, Any], tmp_path: Path) -> None:
    """The same expectations through `leukowatch assess FILE --json`, as a user runs it."""
    path = tmp_path / f"{case['id']}.json"
    path.write_text(json.dumps(case["request"]), encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "leukowatch.cli", "assess", str(path), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    check(case, json.loads(p.stdout))


def test_table_is_large_and_sourced() -> None:
    """At least 80 cases (issue 11, Done when), each with a source and a unique id."""
    assert len(CASES) >= 80
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert all(c.get("source") and c.get("about") for c in CASES)


def test_daids_age_from_a_fhir_patient(tmp_path: Path) -> None:
    """The age in days can come from any reader: a FHIR Patient.birthDate, graded through the CLI
    (4 days old, ANC 0.8: the 2-7 day band, grade 3; the > 7 day band would say grade 1)."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "baby", "gender": "female",
                                                 "birthDate": "2026-07-01"}},
        {"fullUrl": "urn:uuid:o1", "resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
            "subject": {"reference": "urn:uuid:p1"}, "effectiveDateTime": "2026-07-05T09:00:00Z",
            "valueQuantity": {"value": 0.8, "unit": "10*3/uL", "system": "http://unitsofmeasure.org",
                              "code": "10*3/uL"}}},
    ]}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "leukowatch.cli", "assess", str(path), "--criteria", "daids-v2.1",
                        "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    neutropenia = next(f for f in out["findings"] if f["code"] == "neutropenia")
    assert (out["criteria"], neutropenia["grade"]) == ("DAIDS v2.1", 3)
    assert "age 4 days" in neutropenia["source"]


def test_table_covers_every_alert_level_and_criteria() -> None:
    """Every (alert code, level) of the escalation table and every criteria version has a case."""
    expected = {(row["code"], row["level"]) for row in load_table("alerts")["alert"]}
    covered = {pair for c in CASES for key in ("alerts", "alerts_include") for pair in c.get(key, {}).items()}
    assert expected <= covered, f"no case for {sorted(expected - covered)}"
    versions = {c["request"].get("criteria", "ctcae-v5") for c in CASES}
    assert set(criteria_versions()) <= versions
