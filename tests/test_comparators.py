"""Values reported with a comparator (issue 11 §1): `<x` is judged as just below x and `>x` as just
above it, on every cut-off the rules use (CTCAE rows, profile limits, severity words, alert
triggers), in every unit, and from every reader (JSON string, HL7 SN, FHIR comparator)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leukowatch.assess import assess
from leukowatch.cli import load_request_text
from leukowatch.knowledge import load_table

_ANALYTES = ("wbc", "neutrophils", "lymphocytes", "monocytes", "eosinophils", "platelets")


def _cutoffs() -> list[tuple[str, float]]:
    """(analyte, x) for every numeric cut-off the rules compare an absolute count with."""
    found: set[tuple[str, float]] = set()
    for row in load_table("criteria")["rows"]:
        if row["version"].startswith("ctcae") and row["analyte"] in _ANALYTES:
            for key in ("below", "at_least", "above", "at_most"):
                if isinstance(row.get(key), (int, float)):
                    found.add((row["analyte"], float(row[key])))
    for profile in load_table("profiles")["profiles"].values():
        for row in profile.get("ranges", []):
            if row["analyte"] in _ANALYTES and not row.get("percent") and "age_min" not in row:
                for key in ("low", "high"):
                    if key in row:
                        found.add((row["analyte"], float(row[key])))
    for row in load_table("severity")["neutropenia"]:
        if row["below"] != "LLN":
            found.add(("neutrophils", float(row["below"])))
    for row in load_table("alerts")["alert"]:
        if "anc_below" in row:
            found.add(("neutrophils", float(row["anc_below"])))
        if "wbc_above" in row:
            found.add(("wbc", float(row["wbc_above"])))
    fn = load_table("infection")["febrile_neutropenia"]
    found |= {("neutrophils", float(fn["anc_below"])), ("neutrophils", float(fn["anc_below_if_falling"]))}
    return sorted(found)


CUTOFFS = _cutoffs()


def _verdict(value: Any, analyte: str, unit: str, profile: str, extra: dict[str, Any]) -> tuple[Any, ...]:
    """What the rules concluded about one count: its flag, findings with grades, alerts with levels."""
    r = {"patient": {"sex": "female", "age_years": 54}, "profile": profile,
         "observations": [{"analyte": analyte, "value": value, "unit": unit}], **extra}
    a = assess(r)
    return (a.counts[analyte].flag,
            tuple((f.code, f.grade, f.severity) for f in a.findings),
            tuple((al.code, al.variant, al.level) for al in a.alerts))


@settings(max_examples=250, deadline=None)
@given(cut=st.sampled_from(CUTOFFS), comparator=st.sampled_from(["<", ">"]),
       per_ul=st.booleans(), profile=st.sampled_from(["standard", "article", "duffy_null"]),
       context=st.sampled_from([{}, {"temperature_c": 38.6}, {"chemotherapy": {"active": True}},
                                {"medications": ["carbimazole"]}, {"anc_expected_to_fall": True,
                                                                   "temperature_c": 38.4}]))
def test_a_bound_is_judged_as_just_beyond_it(cut: tuple[str, float], comparator: str, per_ul: bool,
                                             profile: str, context: dict[str, Any]) -> None:
    analyte, x = cut
    unit = "/uL" if per_ul else "10*9/L"
    scale = 1000.0 if per_ul else 1.0
    bound = f"{comparator}{x * scale:g}"
    step = 1e-6 * max(x, 1.0)  # far smaller than the gap between any two cut-offs
    beyond = (x - step if comparator == "<" else x + step) * scale
    assert _verdict(bound, analyte, unit, profile, context) == _verdict(beyond, analyte, unit, profile, context)


def _anc(value: str, **extra: Any) -> Any:
    return assess({"patient": {"sex": "male", "age_years": 60},
                   "observations": [{"analyte": "neutrophils", "value": value, "unit": "10*9/L"}], **extra})


def test_below_half_with_fever_is_febrile_neutropenia_and_shows_the_comparator() -> None:
    a = _anc("<0.5", temperature_c=38.6)
    fn = a.alert("febrile_neutropenia")
    assert fn is not None and fn.level == "critical" and fn.variant == "confirmed"
    assert "ANC <0.5 ×10⁹/L (<500/µL)" in fn.message
    f = a.finding("neutropenia")
    assert (f.grade, f.severity, f.comparator, f.value) == (4, "severe", "<", 0.5)
    assert any("mildest the bound allows" in n for n in f.notes)
    assert any("fewer than 500 cells per microlitre" in line for line in a.patient_summary)
    d = a.to_dict()
    assert d["counts"]["neutrophils"]["value"] == 0.5 and d["counts"]["neutrophils"]["comparator"] == "<"
    assert d["counts"]["neutrophils"]["per_uL"] == 500


def test_below_one_is_grade_3_not_2_and_greater_equal_keeps_the_bound() -> None:
    assert _anc("<1.0").finding("neutropenia").grade == 3
    assert _anc("1.0").finding("neutropenia").grade == 2
    assert _anc("<=1.0").finding("neutropenia").grade == 2  # at most 1.0: 1.0 itself is possible
    assert _anc("<0.1").alert("severe_neutropenia").variant == "profound"


def test_derived_counts_inherit_the_wbc_bound() -> None:
    r = {"patient": {"sex": "female", "age_years": 30},
         "observations": [{"analyte": "wbc", "value": "<1.0", "unit": "K/uL"},
                          {"analyte": "neutrophils", "value": 50, "unit": "%"}]}
    anc = assess(r).counts["neutrophils"]
    assert anc.comparator == "<" and anc.value < 0.5
    assert assess(r).finding("neutropenia").grade == 4


_HL7 = ("MSH|^~\\&|LAB|HOSP|LW|HOSP|20260110083000||ORU^R01|MSG-C1|P|2.5\r"
        "PID|1||C1^^^HOSP^MR||DOE^JO||19700102|M\r"
        "OBR|1|A1|B1|CBC^Complete blood count^L|||20260110080000\r"
        "OBX|1|SN|751-8^Neutrophils [#/volume] in Blood^LN||<^0.5|10*9/L|1.5-7.5|LL|||F\r")


def test_hl7_sn_and_fhir_comparators_reach_the_rules() -> None:
    hl7 = load_request_text(_HL7, "hl7", "test.hl7")
    hl7["temperature_c"] = 38.6
    a = assess(hl7)
    assert a.counts["neutrophils"].comparator == "<" and a.alert("febrile_neutropenia").level == "critical"
    fhir = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
            "subject": {"reference": "Patient/c2"}, "effectiveDateTime": "2026-01-10T08:00:00Z",
            "valueQuantity": {"value": 0.5, "comparator": "<", "unit": "10*9/L",
                              "system": "http://unitsofmeasure.org", "code": "10*9/L"}}
    req = load_request_text(json.dumps(fhir), "fhir", "obs.json")
    b = assess(req)
    assert b.counts["neutrophils"].comparator == "<" and b.finding("neutropenia").grade == 4


@pytest.mark.parametrize(("value", "flag"), [("<1.5", "low"), (">1.5", "normal"), ("<7.5", "normal"),
                                             (">7.5", "high")])
def test_flags_on_the_range_limits(value: str, flag: str) -> None:
    assert _anc(value).counts["neutrophils"].flag == flag
