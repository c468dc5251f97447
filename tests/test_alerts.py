"""Escalation (issue 11 §2, §3, §5): every alert code and variant of knowledge/alerts.toml fired by a
real request, at the level clinical-reference §11 gives, and every patient text free of medicine
instructions, of "watch for fever" to someone with a fever, and of the cancer care team without
chemotherapy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from conftest import request

from leukowatch.assess import assess
from leukowatch.knowledge import load_table
from leukowatch.model import ALERT_CODES, Assessment
from leukowatch.rules.alerts import alert_rows

#: Words that instruct a medicine change; they belong in clinician text only (issue 11 §5).
_LABEL_ACTION = re.compile(r"\b(interrupt\w*|stop\w*|discontinu\w*|rechallenge\w*|withh[oe]ld\w*|pause\w*|"
                           r"skip\w*|cease\w*)\b", re.IGNORECASE)
_WATCH_FOR_FEVER = re.compile(r"watch for (fever|signs of infection)|if you (get|develop) (a )?fever|"
                              r"develop signs of infection", re.IGNORECASE)


def _req(anc: float | str | None = None, wbc: float | None = None, **extra: Any) -> dict[str, Any]:
    r = request()
    if wbc is not None:
        r["observations"].append({"analyte": "wbc", "value": wbc, "unit": "10*9/L"})
    if anc is not None:
        r["observations"].append({"analyte": "neutrophils", "value": anc, "unit": "10*9/L"})
    r.update(extra)
    return r


def _chronic_history() -> dict[str, Any]:
    obs = [{"analyte": "neutrophils", "value": 1.1, "unit": "10*9/L", "time": t}
           for t in ("2026-01-05T08:00:00Z", "2026-02-20T08:00:00Z", "2026-04-20T08:00:00Z")]
    return {"patient": {"sex": "female", "age_years": 40}, "observations": obs}


#: One request per (code, variant) row of alerts.toml: the table is complete only if each fires.
CASES: dict[tuple[str, str], dict[str, Any]] = {
    ("febrile_neutropenia", "confirmed"): _req(0.3, temperature_c=38.5),
    ("febrile_neutropenia", "possible"): _req(0.3, temperature_c=38.1),
    ("febrile_neutropenia", "reported_fever"): _req(0.3, symptoms=["fever"]),
    ("severe_neutropenia", "chemotherapy_nadir"): _req(0.3, chemotherapy={"active": True}),
    ("severe_neutropenia", "not_on_chemotherapy"): _req(0.3),
    ("severe_neutropenia", "profound"): _req(0.05),
    ("hyperleukocytosis", "default"): _req(wbc=150.0),
    ("febrile_neutropenia", "wbc_only"): _req(wbc=0.8, temperature_c=38.5),
    ("severe_neutropenia", "wbc_only"): _req(wbc=0.9),
    ("drug_agranulocytosis", "afebrile"): _req(0.3, medications=["carbimazole 20 mg"]),
    ("drug_agranulocytosis", "fever"): _req(0.3, medications=["carbimazole"], temperature_c=38.6),
    ("infection_symptoms", "low_count"): _req(wbc=2.0, symptoms=["sore throat"]),
    ("infection_symptoms", "normal_count"): _req(wbc=6.0, symptoms=["sore throat"]),
    ("chemotherapy_hold", "default"): _req(1.0, chemotherapy={"active": True}),
    ("drug_monitoring", "critical"): _req(0.3, medications=["clozapine"]),
    ("drug_monitoring", "warning"): _req(0.8, medications=["clozapine"]),
    ("drug_monitoring", "info"): _req(2.5, medications=["clozapine"]),
    ("chronic_neutropenia", "default"): _chronic_history(),
    ("recurrent_infections", "default"): _req(wbc=6.0, recurrent_infections=True),
}


def test_the_table_has_one_row_per_code_and_variant_each_sourced() -> None:
    rows = alert_rows()
    keys = [(r["code"], r["variant"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(CASES)
    assert {code for code, _ in keys} == set(ALERT_CODES)
    for row in rows:
        assert row["level"] in ("critical", "warning", "info")
        for col in ("trigger", "clinician", "patient", "source"):
            assert row[col].strip(), (row["code"], col)
        assert not _LABEL_ACTION.search(row["patient"]), row["code"]
        if "chemotherapy" not in row["variant"]:
            assert "cancer care team" not in row["patient"], row["code"]
    where = load_table("alerts")["where"]
    assert "cancer care team" in where["chemotherapy"] and "cancer" not in where["default"]


@pytest.mark.parametrize(("code", "variant"), list(CASES))
def test_each_alert_fires_at_its_level_with_safe_patient_text(code: str, variant: str) -> None:
    a = assess(CASES[(code, variant)])
    fired = [al for al in a.alerts if al.code == code]
    assert [al.variant for al in fired] == [variant]
    al = fired[0]
    row = next(r for r in alert_rows() if (r["code"], r["variant"]) == (code, variant))
    assert al.level == row["level"]
    assert al.message and al.patient_message and al.message != al.patient_message
    assert "{" not in al.message + al.patient_message  # every template field filled
    _check_patient_text(a)


def _check_patient_text(a: Assessment) -> None:
    patient = a.patient_summary + [al.patient_message for al in a.alerts] + a.advice.treatment + \
        a.advice.home_care + a.advice.contact_doctor
    for line in patient:
        assert not _LABEL_ACTION.search(line), line
    febrile = a.alert("febrile_neutropenia") is not None or any(
        al.code == "drug_agranulocytosis" and al.variant == "fever" for al in a.alerts)
    if febrile:
        for line in patient:
            assert not _WATCH_FOR_FEVER.search(line), line
    chemo = a.alert("chemotherapy_hold") is not None or any(
        al.variant == "chemotherapy_nadir" for al in a.alerts)
    if not chemo:
        assert not any("cancer care team" in line for line in patient)


def test_label_actions_live_in_the_clinician_text_only() -> None:
    a = assess(CASES[("drug_monitoring", "critical")])
    al = a.alert("drug_monitoring")
    assert "interrupt clozapine" in al.message.lower() and "interrupt" not in al.patient_message.lower()
    ag = assess(CASES[("drug_agranulocytosis", "afebrile")]).alert("drug_agranulocytosis")
    assert "carbimazole" in ag.message and "antithyroid" in ag.message and "prescriber's decision" in ag.message
    assert "carbimazole 20 mg" in ag.patient_message and "today" in ag.patient_message


@pytest.mark.parametrize(("anc", "chemo", "level"), [
    (0.49, False, "critical"), (0.49, True, "warning"), (0.09, True, "critical"), (0.1, True, "warning"),
    (0.5, False, None),
])
def test_severe_neutropenia_level_follows_the_chemotherapy_context(anc: float, chemo: bool, level: str | None) -> None:
    a = assess(_req(anc, chemotherapy={"active": chemo}))
    al = a.alert("severe_neutropenia")
    assert (al.level if al else None) == level


def test_dual_use_methotrexate_is_not_chemotherapy_unless_the_request_says_so() -> None:
    """Low-dose methotrexate in rheumatoid arthritis: a cause, critical as a lab value, no oncology words."""
    a = assess(_req(0.3, medications=["methotrexate 15 mg weekly"], conditions=["rheumatoid arthritis"]))
    assert a.alert("severe_neutropenia").variant == "not_on_chemotherapy"
    assert a.alert("chemotherapy_hold") is None
    words = " ".join(a.patient_summary + a.advice.treatment + a.advice.contact_doctor
                     + [m.why for m in a.possible_causes["medications"]]).lower()
    assert "chemotherapy" not in words and "cancer" not in words and "oncology" not in words
    assert [m.generic for m in a.possible_causes["medications"]] == ["methotrexate"]
    on_chemo = assess(_req(0.3, medications=["methotrexate"], chemotherapy={"active": True}))
    assert on_chemo.alert("severe_neutropenia").variant == "chemotherapy_nadir"


@pytest.mark.parametrize(("wbc", "alert"), [(100.0, False), (100.5, True), (">100", True), ("<100", False)])
def test_hyperleukocytosis_above_100(wbc: float | str, alert: bool) -> None:
    r = request()
    r["observations"] = [{"analyte": "wbc", "value": wbc, "unit": "10*9/L"}]
    al = assess(r).alert("hyperleukocytosis")
    assert (al is not None) is alert
    if al:
        assert al.level == "critical" and "haematology" in al.message


def test_fever_with_normal_counts_gets_fever_advice_but_no_low_count_advice() -> None:
    a = assess(_req(3.5, wbc=7.0, temperature_c=38.6))
    assert a.alert("febrile_neutropenia") is None
    advice = " ".join(a.advice.treatment + a.advice.home_care + a.advice.contact_doctor).lower()
    assert "antibiotics" in advice
    assert "white cell" not in advice and "white blood cell" not in advice and "cancer" not in advice


def test_an_emergency_is_not_followed_by_a_slower_instruction() -> None:
    """With febrile neutropenia the person reads "now", never also "today" or "soon" for the same episode."""
    a = assess(_req(0.3, temperature_c=38.6, symptoms=["fever", "sore throat"]))
    patient = a.patient_summary + a.advice.contact_doctor
    assert any("urgent medical care now" in line for line in patient)
    assert not any(re.search(r"\b(today|soon)\b", line) for line in patient if "doctor" in line.lower()
                   and "infection" in line.lower())
    assert a.verdict.startswith("EMERGENCY: febrile neutropenia")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leukowatch.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_knowledge_alerts_command_prints_the_table() -> None:
    p = _cli("knowledge", "alerts", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == alert_rows()
    text = _cli("knowledge", "alerts")
    assert text.returncode == 0 and "febrile_neutropenia / possible" in text.stdout and "CRITICAL" in text.stdout


def test_cli_temperature_flags() -> None:
    fahrenheit = _cli("assess", "--neutrophils", "0.4", "--temp-f", "101.3", "--json")
    assert fahrenheit.returncode == 0, fahrenheit.stderr
    assert json.loads(fahrenheit.stdout)["alerts"][0]["variant"] == "confirmed"
    wrong = _cli("assess", "--neutrophils", "0.4", "--temp", "101.3")
    assert wrong.returncode == 2 and "temperature_c" in wrong.stderr and "Fahrenheit" in wrong.stderr


@pytest.mark.parametrize(("last_dose", "alert"), [("2026-03-05", True), ("2026-02-26", True), ("2026-02-20", False),
                                                  (None, False)])
def test_anc_below_1_falls_further_within_the_nadir_window_after_a_dose(last_dose: str | None, alert: bool) -> None:
    """ANC 0.8 with 38.5 °C, 5 or 12 days after a dose (day 7-14 nadir window): expected to fall, so
    febrile neutropenia (NCCN); 18 days after, or with no dose date, it is not assumed."""
    r = request()
    r["observations"] = [{"analyte": "neutrophils", "value": 0.8, "unit": "10*9/L", "time": "2026-03-10T08:00:00Z"}]
    r["temperature_c"] = 38.5
    r["chemotherapy"] = {"active": True, "last_dose": last_dose}
    fn = assess(r).alert("febrile_neutropenia")
    assert (fn is not None) is alert
    if fn:
        assert "expected to fall below 0.5" in fn.message


@pytest.mark.parametrize(("anc", "chemotherapy", "alert"), [
    ("0.5", True, True), ("<=0.5", True, True), (0.51, True, False), (0.5, False, False), (0.49, False, True)])
def test_anc_at_0_5_with_fever_on_anticancer_treatment_is_febrile_neutropenia(
        anc: float | str, chemotherapy: bool, alert: bool) -> None:
    """NICE CG151 counts ANC <= 0.5 with > 38 °C in a person having anticancer treatment as neutropenic
    sepsis, so exactly 0.5 on chemotherapy is the emergency; off treatment IDSA's strict < 0.5 holds."""
    r = _req(anc, temperature_c=38.5, chemotherapy={"active": chemotherapy})
    a = assess(r)
    fn = a.alert("febrile_neutropenia")
    assert (fn is not None) is alert
    if fn and chemotherapy and anc != 0.49:
        assert fn.level == "critical" and a.verdict.startswith("EMERGENCY") and "NICE CG151" in fn.message


def test_clozapine_agranulocytosis_tells_the_patient_once() -> None:
    a = assess(_req(0.3, medications=["clozapine 100 mg"]))
    assert {al.code for al in a.alerts} >= {"severe_neutropenia", "drug_agranulocytosis", "drug_monitoring"}
    assert [line for line in a.patient_summary if "clozapine" in line and "today" in line] == [
        a.alert("drug_agranulocytosis").patient_message]
    assert "Label: interrupt clozapine" in a.alert("drug_monitoring").message


@pytest.mark.parametrize(("anc", "temperature_c", "warned"), [
    (0.5, 38.3, True), (0.8, 38.9, True), (0.99, 38.0, True), (0.8, 37.9, False), (1.2, 38.9, True),
    (3.5, 38.9, False)])
def test_a_measured_fever_with_neutropenia_that_is_not_febrile_neutropenia_needs_a_doctor_today(
        anc: float, temperature_c: float, warned: bool) -> None:
    """ANC 0.5-1.5 with a fever and no sign the count is falling is not febrile neutropenia (IDSA, NCCN), but
    a fever is the first of the article's signs of infection: the low-count infection warning fires with the
    measured temperature, and below an ANC of 1.0 the neutropenia finding says what would make it febrile
    neutropenia. A normal count with a fever raises no alert (it gets the fever advice only); below
    38.0 °C is no fever."""
    a = assess(_req(anc, wbc=max(anc * 2.5, 2.0) if anc < 1.5 else 7.0, temperature_c=temperature_c))
    assert a.alert("febrile_neutropenia") is None
    sign = a.alert("infection_symptoms")
    assert (sign is not None) is warned, [al.code for al in a.alerts]
    if warned:
        assert sign.level == "warning" and sign.variant == "low_count" and f"{temperature_c:.1f} °C" in sign.message
        assert any("today" in line for line in a.patient_summary), a.patient_summary
        note = " ".join(next(f for f in a.findings if f.code == "neutropenia").notes)
        assert ("expected to fall below 0.5 within 48 h" in note) is (anc < 1.0), note
    if anc >= 1.5:
        assert a.alerts == []
