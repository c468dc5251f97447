"""The per-patient assessment: every article fact and rule at its boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import cbc, request
from hypothesis import given
from hypothesis import strategies as st

from leukowatch.assess import assess
from leukowatch.model import ANALYTES, FINDING_CODES, InputError
from leukowatch.rules.ranges import age_band, profile_names, profile_range


def codes(a) -> set[str]:
    return {f.code for f in a.findings}


# --- Article: WBC ranges (LLS): 5,000-10,000/uL males and children, 3,500-11,000/uL females -----------

@pytest.mark.parametrize(("sex", "age", "wbc", "low"), [
    ("male", 40, 4.9, True), ("male", 40, 5.0, False), ("male", 40, 10.0, False),
    ("female", 40, 3.49, True), ("female", 40, 3.5, False), ("female", 40, 11.0, False),
    ("female", 10, 4.9, True), ("male", 10, 5.0, False),
])
def test_article_wbc_ranges(sex: str, age: float, wbc: float, low: bool) -> None:
    for profile in ("standard", "article"):
        r = request(sex, age, wbc=wbc)
        r["profile"] = profile
        assert ("leukopenia" in codes(assess(r))) is low


def test_wbc_high_is_leukocytosis() -> None:
    a = assess(request("male", 40, wbc=10.1))
    assert codes(a) == {"leukocytosis"} and a.finding("leukocytosis").grade is None
    assert assess(request("male", 40, wbc=120)).finding("leukocytosis").grade == 3


# --- Neutropenia: article < 1,000/uL; standard < 1,500/uL; children under 1 y < 1,000/uL ----------------

@pytest.mark.parametrize(("profile", "anc", "low"), [
    ("article", 0.99, True), ("article", 1.0, False), ("article", 1.2, False),
    ("standard", 1.49, True), ("standard", 1.5, False),
])
def test_neutropenia_thresholds(profile: str, anc: float, low: bool) -> None:
    r = request(neutrophils=anc)
    r["profile"] = profile
    assert ("neutropenia" in codes(assess(r))) is low


def test_infant_neutropenia_threshold() -> None:
    assert "neutropenia" not in codes(assess(request(age=0.5, neutrophils=1.2)))
    assert "neutropenia" in codes(assess(request(age=3, neutrophils=1.2)))


@pytest.mark.parametrize(("anc", "severity", "grade"), [
    (1.4, "mild", 2), (1.0, "mild", 2), (0.99, "moderate", 3), (0.5, "moderate", 3),
    (0.49, "severe", 4), (0.1, "severe", 4), (0.09, "profound", 4),
])
def test_neutropenia_severity_and_grade(anc: float, severity: str, grade: int) -> None:
    f = assess(request(neutrophils=anc)).finding("neutropenia")
    assert (f.severity, f.grade, f.criteria) == (severity, grade, "CTCAE v5.0")
    assert f.rule and f.threshold and f.source


def test_neutropenia_without_leukopenia() -> None:
    a = assess(request(wbc=4.6, neutrophils=0.9))
    assert codes(a) == {"neutropenia"}


# --- Five kinds of leukopenia, one per white cell type -----------------------------------------------

@pytest.mark.parametrize(("analyte", "value", "code"), [
    ("neutrophils", 1.0, "neutropenia"), ("lymphocytes", 0.7, "lymphocytopenia"),
    ("monocytes", 0.1, "monocytopenia"), ("eosinophils", 0.01, "eosinopenia"), ("basophils", 0.0, "basopenia"),
])
def test_five_kinds(analyte: str, value: float, code: str) -> None:
    a = assess(request(**{analyte: value}))
    assert code in codes(a)


def test_basopenia_is_never_graded() -> None:
    f = assess(request(basophils=0.0)).finding("basopenia")
    assert f.grade is None and "no accepted threshold" in " ".join(f.notes)
    assert "basopenia" not in codes(assess(request(basophils=0.01)))


def test_lymphocytopenia_grades_and_children() -> None:
    assert assess(request(lymphocytes=0.45)).finding("lymphocytopenia").grade == 3
    assert "lymphocytopenia" in codes(assess(request(age=1.5, lymphocytes=2.5)))  # < 3.0 under 2 y
    assert "lymphocytopenia" not in codes(assess(request(age=30, lymphocytes=2.5)))


def test_anemia_thrombocytopenia_pancytopenia() -> None:
    a = assess(request("male", 60, wbc=2.0, hemoglobin=9.0, platelets=40))
    assert {"leukopenia", "anemia", "thrombocytopenia", "pancytopenia"} <= codes(a)
    assert a.finding("anemia").grade == 2 and a.finding("thrombocytopenia").grade == 3
    assert "anemia" not in codes(assess(request("female", 60, hemoglobin=12.5)))
    assert "anemia" in codes(assess(request("male", 60, hemoglobin=12.5)))


# --- Lab range overrides the profile (flag and CTCAE grade 1) ------------------------------------------

def test_lab_range_overrides_profile() -> None:
    r = request("male", 40)
    r["observations"] = [{"analyte": "wbc", "value": 4.2, "unit": "K/uL", "reference_range": {"low": 4.0}}]
    a = assess(r)
    assert a.counts["wbc"].flag == "normal" and a.counts["wbc"].range_source == "lab"
    r["observations"][0]["reference_range"] = {"low": 4.5, "high": 11}
    f = assess(r).finding("leukopenia")
    assert f.grade == 1 and "lab" in f.source


# --- Differential ----------------------------------------------------------------------------------

def test_anc_from_percentages_is_derived() -> None:
    r = request(wbc=2.1)
    r["observations"].append({"code": "770-8", "value": 34, "unit": "%"})
    a = assess(r)
    n = a.counts["neutrophils"]
    assert n.derived and n.value == pytest.approx(0.714) and n.percent == 34
    assert a.finding("neutropenia").grade == 3


def test_anc_from_segs_and_bands() -> None:
    r = request(wbc=3.0)
    r["observations"] += [{"code": "26505-8", "value": 30, "unit": "%"}, {"code": "764-1", "value": 5, "unit": "%"}]
    assert assess(r).counts["neutrophils"].value == pytest.approx(1.05)


def test_absolute_and_percent_disagreement_warns() -> None:
    r = request(wbc=4.0, neutrophils=2.5)
    r["observations"].append({"analyte": "neutrophils", "value": 40, "unit": "%"})
    a = assess(r)
    assert a.counts["neutrophils"].value == 2.5 and not a.counts["neutrophils"].derived
    assert any("disagrees" in w for w in a.warnings)


def test_differential_sum_warning() -> None:
    r = request(wbc=5.0)
    r["observations"] += [{"analyte": a, "value": v, "unit": "%"} for a, v in
                          (("neutrophils", 60), ("lymphocytes", 30), ("monocytes", 30), ("eosinophils", 2),
                           ("basophils", 1))]
    assert any("add up to 123%" in w for w in assess(r).warnings)


@pytest.mark.parametrize(("parts", "warned"), [
    ((("neutrophils", 80), ("bands", 31)), True),  # an ANC of 1.11 x the WBC it is a share of
    ((("neutrophils", 70), ("lymphocytes", 45)), True),
    ((("neutrophils", 60), ("lymphocytes", 30)), False),  # a partial differential short of 100 % is fine
])
def test_a_partial_differential_above_the_tolerance_is_warned(parts: tuple, warned: bool) -> None:
    r = request(wbc=3.0)
    r["observations"] += [{"analyte": a, "value": v, "unit": "%"} for a, v in parts]
    assert any("add up to" in w and "check the differential" in w for w in assess(r).warnings) is warned


# --- Profiles: Duffy-null, never race -----------------------------------------------------------

def test_duffy_null_profile() -> None:
    r = request(neutrophils=1.3, wbc=3.2)
    assert "neutropenia" in codes(assess(r))
    r["patient"]["duffy_null"] = True
    a = assess(r)
    assert a.profile == "duffy_null" and codes(a) == set()
    r["observations"] = cbc(neutrophils=1.2)
    assert "neutropenia" in codes(assess(r))


@given(age=st.floats(min_value=0, max_value=129.99), sex=st.sampled_from(["male", "female", "unknown"]))
def test_age_band_keeps_every_range(age: float, sex: str) -> None:
    """Caches key ranges by age band: every age must get exactly the ranges of its band's edge."""
    for profile in profile_names():
        band = age_band(profile, age)
        for analyte in ANALYTES:
            for percent in (False, True):
                assert profile_range(profile, analyte, sex, age, percent) == profile_range(
                    profile, analyte, sex, band, percent)


def test_unknown_profile_is_an_error() -> None:
    r = request(wbc=3.0)
    r["profile"] = "race_based"
    with pytest.raises(InputError, match="unknown profile"):
        assess(r)


def test_ctcae_v6_selectable() -> None:
    r = request(neutrophils=0.4)
    r["criteria"] = "ctcae-v6"
    a = assess(r)
    assert a.criteria == "CTCAE v6.0" and a.finding("neutropenia").grade == 3


# --- Fever and infection -------------------------------------------------------------------------

@pytest.mark.parametrize(("anc", "temp", "sustained", "falling", "variant"), [
    (0.4, 38.3, False, False, "confirmed"), (0.4, 38.2, False, False, "possible"), (0.4, 38.0, True, False, "confirmed"),
    (0.4, 38.0, False, False, "possible"), (0.4, 37.9, True, False, None), (0.5, 39.0, False, False, None),
    (0.8, 39.0, False, True, "confirmed"), (1.0, 39.0, False, True, None),
])
def test_febrile_neutropenia(anc: float, temp: float, sustained: bool, falling: bool, variant: str | None) -> None:
    """IDSA criteria confirm it; a single 38.0-38.2 °C is *possible* febrile neutropenia, still critical
    (NICE CG151 counts > 38 °C), never "below the threshold" (clinical-reference §11)."""
    r = request(neutrophils=anc)
    r.update(temperature_c=temp, fever_sustained_1h=sustained, anc_expected_to_fall=falling)
    a = assess(r)
    fn = a.alert("febrile_neutropenia")
    assert (fn.variant if fn else None) == variant
    if variant:
        assert fn.level == "critical"
        assert a.verdict.startswith("EMERGENCY" if variant == "confirmed" else "URGENT: possible febrile")
    assert all("threshold" not in note for f in a.findings for note in f.notes)


def test_no_temperature_means_no_fn_alert_but_a_note() -> None:
    r = request(neutrophils=0.3)
    r["symptoms"] = ["sore throat"]
    a = assess(r)
    assert a.alert("febrile_neutropenia") is None
    assert any("would meet febrile neutropenia if febrile" in n for n in a.finding("neutropenia").notes)
    assert a.alert("severe_neutropenia") is not None and a.alert("infection_symptoms") is not None


def test_reported_fever_without_a_temperature_is_possible_febrile_neutropenia() -> None:
    """A fever reported with ANC < 0.5 and no measured temperature is treated like one (§11)."""
    r = request(neutrophils=0.3)
    r["symptoms"] = ["fever"]
    a = assess(r)
    fn = a.alert("febrile_neutropenia")
    assert fn is not None and fn.level == "critical" and fn.variant == "reported_fever"
    assert "measure the temperature now" in fn.message.lower()
    assert "urgent medical care now" in fn.patient_message


@pytest.mark.parametrize("symptom", ["fever", "sweating", "chills", "toothache", "sore throat",
                                     "mouth ulcers that are difficult to heal", "tiredness", "flu-like symptoms",
                                     "rash"])
def test_article_infection_symptoms(symptom: str) -> None:
    r = request(wbc=2.5)
    r["symptoms"] = [symptom]
    assert assess(r).alert("infection_symptoms").level == "warning"


def test_mascc_missing_items_never_assumed() -> None:
    r = request(age=45, neutrophils=0.2)
    r["temperature_c"] = 38.5
    a = assess(r)
    m = next(s for s in a.scores if s.name.startswith("MASCC"))
    assert m.points == 2 and not m.complete and m.risk is None and "No hypotension (systolic BP > 90 mmHg)" in m.missing
    r["mascc"] = {"burden_of_illness": "mild", "hypotension": False, "copd": False, "tumour": "solid",
                  "dehydration": False, "outpatient": True}
    m = next(s for s in assess(r).scores if s.name.startswith("MASCC"))
    assert m.points == 26 and m.complete and m.risk == "low"
    r["mascc"] = {"burden_of_illness": "moderate", "hypotension": True, "copd": True}
    m = next(s for s in assess(r).scores if s.name.startswith("MASCC"))
    assert m.points == 5 and m.risk == "high"  # 5 + at most 4+3+3 = 15 < 21, decided despite missing items


def test_cisne_fills_monocytes_from_counts() -> None:
    r = request(neutrophils=0.3, monocytes=0.1)
    r.update(temperature_c=38.9, cisne={"ecog": 2, "stress_hyperglycemia": False, "copd": False,
                                        "chronic_cardiovascular_disease": False, "mucositis_grade": 1})
    c = next(s for s in assess(r).scores if s.name.startswith("CISNE"))
    assert c.complete and c.points == 3 and c.risk == "high" and c.items["monocytes_below_200"] == 1


# --- Treatment context ---------------------------------------------------------------------------

def test_chemotherapy_hold() -> None:
    r = request(neutrophils=1.4, platelets=160)
    r["chemotherapy"] = {"active": True, "last_dose": "2026-11-10"}
    hold = assess(r).alert("chemotherapy_hold")
    assert hold is not None and "discuss with the oncology team before the next cycle" in hold.message
    r["observations"] = cbc(neutrophils=1.5, platelets=99)
    assert assess(r).alert("chemotherapy_hold") is not None
    r["observations"] = cbc(neutrophils=1.5, platelets=100)
    assert assess(r).alert("chemotherapy_hold") is None
    r["observations"] = cbc(neutrophils=1.2, platelets=150)
    r["chemotherapy"]["hold_thresholds"] = {"neutrophils": 1.0}
    assert assess(r).alert("chemotherapy_hold") is None


@pytest.mark.parametrize(("anc", "duffy", "level", "word"), [
    (1.6, False, "info", "normal range"), (1.2, False, "warning", "continue clozapine"),
    (0.7, False, "warning", "interrupt clozapine"), (0.4, False, "critical", "interrupt clozapine"),
    (1.2, True, "info", "normal range"), (0.7, True, "warning", "continue clozapine"),
    (0.4, True, "critical", "interrupt clozapine"),
])
def test_clozapine_monitoring(anc: float, duffy: bool, level: str, word: str) -> None:
    r = request(neutrophils=anc)
    r["patient"]["duffy_null"] = duffy
    r["medications"] = ["Clozaril 100 mg nightly"]
    al = assess(r).alert("drug_monitoring")
    assert al.level == level and word in al.message


def test_deferiprone_monitoring() -> None:
    r = request(neutrophils=1.4)
    r["medications"] = ["Ferriprox"]
    assert "interrupt deferiprone" in assess(r).alert("drug_monitoring").message


# --- Causes --------------------------------------------------------------------------------------

def test_causes_from_article() -> None:
    r = request(wbc=2.5)
    r["medications"] = ["Bactrim DS", "Keflex 500 mg", "paracetamol"]
    r["conditions"] = ["SLE", "Crohn's disease"]
    a = assess(r)
    meds = {m.input: m for m in a.possible_causes["medications"]}
    assert meds["Bactrim DS"].generic == "sulfamethoxazole/trimethoprim" and meds["Bactrim DS"].source
    assert meds["Keflex 500 mg"].generic == "cephalexin"
    assert a.possible_causes["unlinked_medications"] == ["paracetamol"]
    names = {c.name for c in a.possible_causes["conditions"]}
    assert "lupus" in names and any("bowel" in n for n in names)


# --- Chronicity (article: low on >= 3 occasions over 3 months) -----------------------------------

def _history(*points: tuple[str, float]) -> dict:
    r = request()
    r["observations"] = [{"analyte": "neutrophils", "value": v, "unit": "10*9/L", "time": t} for t, v in points]
    return r


def test_one_result_is_undetermined() -> None:
    assert assess(request(neutrophils=1.0)).chronicity.status == "undetermined"


def test_two_lows_ten_weeks_apart_not_chronic() -> None:
    a = assess(_history(("2026-01-01", 1.0), ("2026-03-12", 1.1)))
    assert a.chronicity.status == "acute"


def test_three_lows_over_thirteen_weeks_chronic() -> None:
    a = assess(_history(("2026-01-01", 1.0), ("2026-02-10", 1.2), ("2026-04-02", 1.1)))
    assert a.chronicity.status == "chronic" and a.alert("chronic_neutropenia") is not None
    assert "2026-01-01" in a.chronicity.evidence[0] and "2026-04-02" in a.chronicity.evidence[0]


def test_three_lows_within_89_days_not_chronic() -> None:
    a = assess(_history(("2026-01-01", 1.0), ("2026-02-10", 1.2), ("2026-03-31", 1.1)))
    assert a.chronicity.status == "acute"


# --- Output shape and safety ----------------------------------------------------------------------

def test_json_shape_matches_contract() -> None:
    r = request(wbc=2.1, neutrophils=0.71)
    r.update(medications=["Bactrim DS"], conditions=["lupus"], temperature_c=38.6)
    d = assess(r).to_dict()
    assert set(d) >= {"counts", "findings", "alerts", "chronicity", "possible_causes", "advice", "profile",
                      "criteria", "knowledge_version", "disclaimer"}
    n = d["counts"]["neutrophils"]
    assert n["per_uL"] == 710 and n["unit"] == "10^9/L" and n["flag"] == "low"
    f = d["findings"][1]
    assert {"code", "analyte", "value", "unit", "grade", "criteria", "severity", "threshold", "rule",
            "source"} <= set(f)
    assert d["possible_causes"]["medications"][0]["class"] == "sulfonamide"


@given(st.dictionaries(st.sampled_from(["wbc", "neutrophils", "lymphocytes", "monocytes", "eosinophils",
                                        "basophils", "platelets"]),
                       st.floats(min_value=0, max_value=500, allow_nan=False), min_size=1))
def test_every_finding_is_sourced(counts: dict[str, float]) -> None:
    a = assess(request(**counts))
    for f in a.findings:
        assert f.code in FINDING_CODES and f.rule and f.threshold and f.source
    for line in a.patient_summary + a.advice.treatment + a.advice.home_care + a.advice.contact_doctor:
        lowered = line.lower()
        assert "stop taking" not in lowered and not lowered.startswith("stop")


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "observations"),
    ({"observations": [{"analyte": "wbc", "value": 2.0}]}, "observations[0].unit"),
    ({"observations": [{"analyte": "wbc", "value": 2.0, "unit": "furlongs"}]}, "observations[0].unit"),
    ({"observations": [{"analyte": "wbc", "value": -2.0, "unit": "K/uL"}]}, "observations[0].value"),
    ({"observations": [{"analyte": "wbc", "value": 2000, "unit": "K/uL"}]}, "observations[0].value"),
    ({"observations": [{"analyte": "lymphocytes", "value": 120, "unit": "%"}]}, "observations[0].value"),
    ({"observations": [{"code": "6690-2", "value": 30, "unit": "%"}]}, "observations[0].unit"),
    ({"observations": [{"code": "1234-5", "value": 3, "unit": "K/uL"}]}, "observations[0].code"),
    # an analyte and a LOINC code that disagree: neither is guessed (a WBC graded as an ANC, or back)
    ({"observations": [{"analyte": "wbc", "code": "751-8", "value": 0.3, "unit": "K/uL"}]}, "observations[0].code"),
    ({"observations": [*cbc(wbc=3), {"analyte": "neutrophils", "code": "770-8", "value": 30, "unit": "K/uL"}]},
     "observations[1].unit"),
    ({"observations": [{"analyte": "wbc", "value": 3, "unit": "K/uL", "time": "yesterday"}]},
     "observations[0].time"),
    ({"observations": cbc(wbc=3), "patient": {"sex": "x"}}, "patient.sex"),
    ({"observations": cbc(wbc=3), "temperature_c": 101}, "temperature_c"),
    ({"observations": cbc(wbc=3), "frobnicate": 1}, "frobnicate"),
    ({"observations": cbc(wbc=3), "medications": [{"name": ""}]}, "medications[0].name"),
])
def test_bad_input_names_the_field(raw: dict, field: str) -> None:
    with pytest.raises(InputError) as e:
        assess(raw)
    assert e.value.field == field and e.value.problem


@pytest.mark.parametrize("value", ["1,500", "150,000", "<1,500"])
def test_a_comma_that_may_group_thousands_is_an_error_not_a_decimal(value: str) -> None:
    """"150,000" platelets /uL read as 150.0 /uL graded grade 4 thrombocytopenia, and an ANC of "1,500"
    /uL raised a profound-neutropenia alert: the comma is never guessed."""
    obs = {"analyte": "platelets", "value": value, "unit": "/uL"}
    with pytest.raises(InputError) as err:
        assess({"observations": [*cbc(wbc=6.0), obs]})
    assert err.value.field == "observations[1].value" and "ambiguous" in err.value.problem


@pytest.mark.parametrize(("value", "expected"), [("2,1", 2.1), ("0,500", 0.5), ("<0,5", 0.5), ("12,50", 12.5)])
def test_a_decimal_comma_is_read(value: str, expected: float) -> None:
    a = assess({"observations": [{"analyte": "wbc", "value": value, "unit": "10*9/L"}]})
    assert a.counts["wbc"].value == pytest.approx(expected)


def test_a_birth_date_sets_the_age_of_an_undated_result() -> None:
    """A 2-year-old's WBC 5.2 is low (2-4 y: 5.5-15.5), not an adult's normal, with or without a time."""
    born = date.today() - timedelta(days=2 * 365 + 100)
    undated = {"patient": {"sex": "male", "birth_date": born.isoformat()},
               "observations": [{"analyte": "wbc", "value": 5.2, "unit": "10*9/L"}]}
    a = assess(undated)
    assert "leukopenia" in codes(a) and a.counts["wbc"].reference_range.low == 5.5
    assert not [w for w in a.warnings if "age not given" in w]


@pytest.mark.parametrize(("birth", "time", "field"), [
    ("2099-01-01", None, "patient.birth_date"),
    ("2026-06-01", "2026-01-01T08:00:00Z", "observations[0].time"),
])
def test_a_birth_date_after_the_result_is_an_error(birth: str, time: str | None, field: str) -> None:
    """Never a negative age, which matches no age band and so was judged as an adult's."""
    obs = {"analyte": "wbc", "value": 8.0, "unit": "10*9/L"} | ({"time": time} if time else {})
    with pytest.raises(InputError) as err:
        assess({"patient": {"birth_date": birth}, "observations": [obs]})
    assert err.value.field == field


def test_an_analyte_with_its_own_loinc_or_a_local_code_is_read() -> None:
    same = assess({"observations": [{"analyte": "neutrophils", "code": "751-8", "value": 0.3, "unit": "K/uL"}]})
    local = assess({"observations": [{"analyte": "ANC", "code": "LAB-ANC", "value": 0.3, "unit": "K/uL"}]})
    assert same.counts["neutrophils"].value == local.counts["neutrophils"].value == 0.3


def test_recovered_lows_are_acute_not_undetermined() -> None:
    a = assess(_history(("2026-01-01", 1.0), ("2026-01-20", 2.4)))
    assert a.chronicity.status == "acute" and "recovered since" in a.chronicity.evidence[0]
    assert assess(_history(("2026-01-01", 2.0), ("2026-01-20", 2.4))).chronicity.status == "undetermined"


def test_finding_cites_the_range_row_it_used() -> None:
    f = assess(request("female", 40, wbc=3.0)).finding("leukopenia")
    assert "Leukemia & Lymphoma Society" in f.source and "CTCAE" not in f.source.split(";")[0]
    r = request("female", 40)
    r["observations"] = [{"analyte": "wbc", "value": 3.0, "unit": "K/uL", "reference_range": {"low": 4.0}}]
    assert assess(r).finding("leukopenia").source.startswith("lab;")


# --- Issue 11 §3: no alarm where there is nothing to alarm about -------------------------------------

def _normal_cbc(**override: float) -> dict:
    counts = {"wbc": 6.5, "neutrophils": 60, "lymphocytes": 30, "monocytes": 7, "eosinophils": 3, "basophils": 0}
    counts.update(override)
    obs = [{"analyte": "wbc", "value": counts.pop("wbc"), "unit": "K/uL"}]
    obs += [{"analyte": k, "value": v, "unit": "%"} for k, v in counts.items()]
    obs += [{"analyte": "hemoglobin", "value": 13.2, "unit": "g/dL"}, {"analyte": "platelets", "value": 250,
                                                                       "unit": "10*9/L"}]
    return {"patient": {"sex": "male", "age_years": 40}, "observations": obs}


@pytest.mark.parametrize("override", [{}, {"basophils": 0.1}, {"eosinophils": 0.5}, {"eosinophils": 0}])
def test_normal_cbc_raises_no_alarm(override: dict) -> None:
    """Zero basophils and eosinopenia are reported, never graded, never in the verdict, never advice."""
    a = assess(_normal_cbc(**override))
    assert "low" not in a.verdict.lower()
    assert a.alerts == [] and a.warnings == []
    assert a.advice.treatment == a.advice.home_care == a.advice.contact_doctor == []
    assert codes(a) <= {"basopenia", "eosinopenia"}
    for f in a.findings:
        assert f.grade is None and f.code not in a.verdict
    assert "Your white blood cell counts are in the normal range." in a.patient_summary


def test_advice_entries_only_when_their_condition_holds() -> None:
    lymph = assess(request(lymphocytes=0.6, neutrophils=3.0))  # lymphocytopenia without neutropenia
    treatment = " ".join(lymph.advice.treatment).lower()
    assert "make more white blood cells" not in treatment and "g-csf" not in treatment
    assert not any("fever" in line.lower() and "you have a fever" in line.lower()
                   for line in lymph.advice.contact_doctor)
    neut = assess(request(neutrophils=0.9))
    assert any("make more white blood cells" in t for t in neut.advice.treatment)
    assert not any("cancer care team" in t for t in neut.advice.contact_doctor + neut.patient_summary)


# --- Issue 11 §4: medicines that are not being taken ------------------------------------------------

def _with_meds(meds: list, anc: float = 0.3, time: str = "2026-06-01T08:00:00Z") -> dict:
    return {"patient": {"sex": "female", "age_years": 50},
            "observations": [{"analyte": "neutrophils", "value": anc, "unit": "10*9/L", "time": time}],
            "medications": meds}


@pytest.mark.parametrize("text", ["allergic to penicillin", "penicillin allergy", "amoxicillin - stopped",
                                  "discontinued carbimazole", "no longer on clozapine", "not taking dapsone",
                                  "h/o carbamazepine", "Sulfa allergies"])
def test_free_text_saying_not_taken_is_mentioned_not_current(text: str) -> None:
    a = assess(_with_meds([text]))
    assert a.possible_causes["medications"] == []
    [m] = a.possible_causes["not_current_medications"]
    assert m.input == text and m.not_current.startswith("mentioned, not current")
    assert a.alert("drug_agranulocytosis") is None and a.alert("drug_monitoring") is None
    assert text not in a.possible_causes["unlinked_medications"]


def test_a_current_medicine_beside_a_stopped_one_stays_a_cause() -> None:
    a = assess(_with_meds(["stopped amoxicillin, now carbimazole"]))
    assert [m.generic for m in a.possible_causes["medications"]] == ["carbimazole"]
    assert [m.generic for m in a.possible_causes["not_current_medications"]] == ["amoxicillin"]


@pytest.mark.parametrize(("stop", "current", "monitored"), [
    ("2026-01-15", False, False), ("2026-04-01", True, False), ("2026-06-01", True, True), (None, True, True),
])
def test_stop_date_and_the_drug_window(stop: str | None, current: bool, monitored: bool) -> None:
    """Stopped more than the drug window (90 days) before the result: not a cause, no alert; within it:
    still a cause (dechallenge), but no label monitoring for a medicine no longer taken."""
    a = assess(_with_meds([{"name": "clozapine", "start": "2025-01-01", "stop": stop}]))
    assert bool(a.possible_causes["medications"]) is current
    assert bool(a.possible_causes["not_current_medications"]) is not current
    assert (a.alert("drug_monitoring") is not None) is monitored
    assert (a.alert("drug_agranulocytosis") is not None) is current


def test_arsenic_trioxide_is_antineoplastic_and_silver_sulfadiazine_is_topical() -> None:
    [ato] = assess(_with_meds(["arsenic trioxide"])).possible_causes["medications"]
    assert ato.chemotherapy and "antineoplastic" in ato.why
    [ssd] = assess(_with_meds(["silver sulfadiazine cream"])).possible_causes["medications"]
    assert ssd.generic == "silver sulfadiazine (topical)" and "not systemic" in ssd.why
    [sdz] = assess(_with_meds(["sulfadiazine"])).possible_causes["medications"]
    assert sdz.generic == "sulfadiazine"


# --- Issue 11 §7 and issue 15: other corrections -----------------------------------------------------

@pytest.mark.parametrize(("field", "value", "hint"), [
    ("temperature_c", 100.4, "Fahrenheit"), ("temperature_c", 24.0, None), ("temperature_c", 46.0, None),
    ("temperature_f", 70.0, None),
])
def test_temperature_out_of_range_is_an_error_naming_the_field(field: str, value: float, hint: str | None) -> None:
    r = request(neutrophils=0.4)
    r[field] = value
    with pytest.raises(InputError) as err:
        assess(r)
    assert err.value.field == field
    assert (hint in err.value.problem) if hint else "Fahrenheit" not in err.value.problem


def test_temperature_f_is_accepted() -> None:
    r = request(neutrophils=0.4)
    r["temperature_f"] = 101.3
    assert assess(r).alert("febrile_neutropenia").variant == "confirmed"  # 38.5 °C


def test_a_wbc_in_cells_per_microlitre_no_analyser_reports_is_a_warning_not_grade_4() -> None:
    r = {"patient": {"sex": "male", "age_years": 40}, "observations": [{"analyte": "wbc", "value": 2.1, "unit": "/uL"}]}
    a = assess(r)
    assert "wbc" not in a.counts and a.findings == []
    assert any("did you mean K/µL" in w for w in a.warnings)
    r["observations"][0]["value"] = 0  # a reported zero is a value, graded
    assert assess(r).finding("leukopenia").grade == 4


def test_bands_count_in_the_anc_in_percent_mode() -> None:
    r = {"patient": {"sex": "female", "age_years": 30},
         "observations": [{"analyte": "wbc", "value": 2.1, "unit": "K/uL"},
                          {"analyte": "neutrophils", "value": 15, "unit": "%"},
                          {"analyte": "bands", "value": 5, "unit": "%"}]}
    anc = assess(r).counts["neutrophils"]
    assert anc.value == pytest.approx(0.42) and "bands 5%" in anc.derivation


@pytest.mark.parametrize(("sex", "hb", "anemia"), [("male", 12.9, True), ("male", 13.0, False),
                                                   ("female", 11.9, True), ("female", 12.0, False)])
def test_who_anaemia_thresholds(sex: str, hb: float, anemia: bool) -> None:
    assert ("anemia" in codes(assess(request(sex, 40, hemoglobin=hb)))) is anemia


@pytest.mark.parametrize(("anc", "level", "band"), [(0.15, "critical", "agranulocytosis"),
                                                    (0.3, "critical", "0.2-< 0.5"), (0.7, "warning", "neutropenia")])
def test_deferiprone_bands(anc: float, level: str, band: str) -> None:
    r = request(neutrophils=anc)
    r["medications"] = ["deferiprone"]
    al = assess(r).alert("drug_monitoring")
    assert al.level == level and band in al.message


def test_duffy_null_ranges_are_adult_only_and_say_so_for_children() -> None:
    r = request("female", 10, neutrophils=1.3)
    r["patient"]["duffy_null"] = True
    a = assess(r)
    assert any("adults only" in w for w in a.warnings)
    adult = request("female", 30, neutrophils=1.3)
    adult["patient"]["duffy_null"] = True
    assert not any("adults only" in w for w in assess(adult).warnings)


@pytest.mark.parametrize(("age", "wbc", "high"), [(3.9, 15.5, False), (4.0, 15.5, False), (5, 12.0, False),
                                                 (7, 14.6, True), (10, 13.5, False), (10, 13.6, True),
                                                 (17, 13.1, True), (18, 10.1, True)])
def test_school_age_wbc_upper_limit_is_a_sourced_band(age: float, wbc: float, high: bool) -> None:
    """The upper limit no longer falls from 15.5 to 10.0 at 4 years only because the Iowa table ends."""
    a = assess(request("male", age, wbc=wbc))
    assert (a.counts["wbc"].flag == "high") is high
    if 4 <= age < 18:
        assert "Dallman" in a.counts["wbc"].high_source and "article" in a.counts["wbc"].low_source


@pytest.mark.parametrize(("analyte", "value", "code"), [("eosinophils", 0.51, "eosinophilia"),
                                                         ("eosinophils", 0.5, None),
                                                         ("monocytes", 1.01, "monocytosis"), ("monocytes", 1.0, None)])
def test_eosinophilia_and_monocytosis(analyte: str, value: float, code: str | None) -> None:
    found = codes(assess(request(**{analyte: value})))
    assert (code in found) if code else not found & {"eosinophilia", "monocytosis"}


def test_lows_short_of_the_chronic_rule_are_not_called_a_bare_acute() -> None:
    obs = [{"analyte": "neutrophils", "value": 1.1, "unit": "10*9/L", "time": t}
           for t in ("2026-01-05T08:00:00Z", "2026-02-01T08:00:00Z")]
    a = assess({"patient": {"sex": "female", "age_years": 40}, "observations": obs})
    assert "not chronic by the article's rule (needs >= 3 low results over >= 3 months" in a.verdict
    assert "; acute" not in a.verdict


def test_grade_and_severity_words_never_contradict_in_one_line() -> None:
    a = assess(request(neutrophils=0.7))
    assert "grade 3; ANC severity: moderate (0.5-1.0" in a.verdict
    assert "grade 3, moderate" not in a.verdict


@pytest.mark.parametrize(("age", "anc", "shown"), [(6, 1.2, True), (6, 0.3, False), (30, 1.2, False)])
def test_a_child_with_neutropenia_is_told_the_count_is_usually_repeated(age: float, anc: float, shown: bool) -> None:
    a = assess(request("male", age, neutrophils=anc))
    assert any("three to four weeks later" in line for line in a.advice.contact_doctor) is shown


def test_a_latest_result_dated_in_the_future_is_warned_about() -> None:
    """A mistyped year (2099 for 2025) makes a result the latest one: the verdict reads it, so the caller is
    told to check its date (a store refuses such a result outright); a result within the clock skew is not."""
    from leukowatch.request import FUTURE_SKEW

    def warnings_for(when: datetime) -> list[str]:
        r = {"patient": {"sex": "female", "age_years": 40},
             "observations": [{"analyte": "neutrophils", "value": 0.4, "unit": "10*9/L", "time": when.isoformat()}]}
        return [w for w in assess(r).warnings if "in the future" in w]

    now = datetime.now(UTC)
    assert warnings_for(now + timedelta(days=365 * 70)), "a result 70 years ahead"
    assert warnings_for(now + FUTURE_SKEW / 2) == []
    assert warnings_for(now - timedelta(days=3)) == []
