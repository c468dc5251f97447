"""CTCAE and DAIDS grading at every boundary (docs/clinical-reference.md §2, §12, §13; admiral's boundary rules)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from math import inf, nextafter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leukowatch.assess import assess
from leukowatch.history import build_history
from leukowatch.knowledge import load_table
from leukowatch.model import InputError
from leukowatch.rules.grading import (
    as_interval,
    check_criteria,
    completed_years,
    criteria_for_age,
    criteria_intervals,
    criteria_label,
    criteria_rows,
    criteria_source,
    criteria_table,
    grade,
    interval_holds,
    parse_key,
    row_applies,
    row_holds,
    term_for,
)

V5 = "ctcae-v5"


@pytest.mark.parametrize(("analyte", "value", "lln", "expected"), [
    # White blood cell decreased: G1 <LLN-3.0, G2 <3.0-2.0, G3 <2.0-1.0, G4 <1.0
    ("wbc", 3.5, 3.5, None),  # value = LLN -> not low
    ("wbc", 3.49, 3.5, 1),
    ("wbc", 3.0, 3.5, 1),  # on the cut-off: milder grade
    ("wbc", 2.99, 3.5, 2),
    ("wbc", 2.0, 3.5, 2),  # the article-reference example: WBC 2.0 -> G2
    ("wbc", 1.99, 3.5, 3),
    ("wbc", 1.0, 3.5, 3),
    ("wbc", 0.99, 3.5, 4),
    ("wbc", 0.0, 3.5, 4),
    # Neutrophil count decreased: G1 <LLN-1.5, G2 <1.5-1.0, G3 <1.0-0.5, G4 <0.5
    ("neutrophils", 1.8, 2.0, 1),
    ("neutrophils", 1.5, 2.0, 1),
    ("neutrophils", 1.49, 2.0, 2),
    ("neutrophils", 1.0, 2.0, 2),
    ("neutrophils", 0.99, 2.0, 3),
    ("neutrophils", 0.71, 1.5, 3),
    ("neutrophils", 0.5, 1.5, 3),
    ("neutrophils", 0.49, 1.5, 4),
    # Lymphocyte count decreased: G1 <LLN-0.8, G2 <0.8-0.5, G3 <0.5-0.2, G4 <0.2
    ("lymphocytes", 0.9, 1.0, 1),
    ("lymphocytes", 0.8, 1.0, 1),
    ("lymphocytes", 0.79, 1.0, 2),
    ("lymphocytes", 0.5, 1.0, 2),
    ("lymphocytes", 0.49, 1.0, 3),
    ("lymphocytes", 0.2, 1.0, 3),
    ("lymphocytes", 0.19, 1.0, 4),
    # Platelet count decreased: G1 <LLN-75, G2 <75-50, G3 <50-25, G4 <25
    ("platelets", 149, 150, 1),
    ("platelets", 75, 150, 1),
    ("platelets", 74.9, 150, 2),
    ("platelets", 50, 150, 2),
    ("platelets", 49, 150, 3),
    ("platelets", 25, 150, 3),
    ("platelets", 24, 150, 4),
    # Anemia: G1 <LLN-10.0, G2 <10.0-8.0, G3 <8.0
    ("hemoglobin", 11.9, 12.0, 1),
    ("hemoglobin", 10.0, 12.0, 1),
    ("hemoglobin", 9.9, 12.0, 2),
    ("hemoglobin", 8.0, 12.0, 2),
    ("hemoglobin", 7.9, 12.0, 3),
])
def test_low_boundaries(analyte: str, value: float, lln: float, expected: int | None) -> None:
    g = grade(V5, analyte, "low", value, lln=lln)
    assert (g.grade if g else None) == expected


@pytest.mark.parametrize(("analyte", "value", "expected"), [
    ("lymphocytes", 4.0, None), ("lymphocytes", 4.01, 2), ("lymphocytes", 20.0, 2), ("lymphocytes", 20.01, 3),
    ("wbc", 100.0, None), ("wbc", 100.1, 3),
])
def test_high_boundaries(analyte: str, value: float, expected: int | None) -> None:
    g = grade(V5, analyte, "high", value)
    assert (g.grade if g else None) == expected


def test_grade_one_needs_lln() -> None:
    assert grade(V5, "wbc", "low", 3.2, lln=None) is None
    assert grade(V5, "wbc", "low", 3.2, lln=3.5).lln_used
    assert not grade(V5, "wbc", "low", 2.5, lln=None).lln_used


@pytest.mark.parametrize(("value", "expected"), [
    (1.6, None), (1.5, None), (1.49, 1), (1.0, 1), (0.99, 2), (0.5, 2), (0.49, 3), (0.1, 3), (0.09, 4),
])
def test_ctcae_v6_neutrophils(value: float, expected: int | None) -> None:
    g = grade("ctcae-v6", "neutrophils", "low", value, lln=2.0)
    assert (g.grade if g else None) == expected
    if g:
        assert g.criteria == "CTCAE v6.0"


def test_v6_has_no_lymphocyte_decreased() -> None:
    assert grade("ctcae-v6", "lymphocytes", "low", 0.1, lln=1.0) is None


def _reference_grade(row_specs: list[dict], value: float, lln: float) -> int | None:
    """An independent reading of the table: every row's interval, checked without ordering."""
    hits = []
    for r in row_specs:
        below = lln if r["below"] == "LLN" else r["below"]
        if value < below and ("at_least" not in r or value >= r["at_least"]):
            hits.append(r["grade"])
    assert len(hits) <= 1, "criteria rows overlap"
    return hits[0] if hits else None


@given(
    analyte=st.sampled_from(["wbc", "neutrophils", "lymphocytes", "platelets", "hemoglobin"]),
    value=st.floats(min_value=0, max_value=400, allow_nan=False),
    lln_factor=st.floats(min_value=1.0, max_value=3.0),
)
def test_grades_are_a_partition(analyte: str, value: float, lln_factor: float) -> None:
    rows = [r for r in load_table("criteria")["rows"] if r["version"] == V5 and r["analyte"] == analyte
            and r["direction"] == "low"]
    grade1_floor = next(r["at_least"] for r in rows if r["grade"] == 1)
    lln = grade1_floor * lln_factor
    g = grade(V5, analyte, "low", value, lln=lln)
    assert (g.grade if g else None) == _reference_grade(rows, value, lln)


@given(a=st.floats(min_value=0, max_value=5), b=st.floats(min_value=0, max_value=5))
def test_grade_is_monotone(a: float, b: float) -> None:
    """A lower ANC never gets a milder grade."""
    lo, hi = sorted((a, b))
    g_lo = grade(V5, "neutrophils", "low", lo, lln=1.5)
    g_hi = grade(V5, "neutrophils", "low", hi, lln=1.5)
    assert (g_lo.grade if g_lo else 0) >= (g_hi.grade if g_hi else 0)


def test_rows_are_sorted_worst_first() -> None:
    grades = [r["grade"] for r in criteria_rows(V5, "wbc", "low")]
    assert grades == sorted(grades, reverse=True)


# ------------------------------------------------------------------ CTCAE v6.0 WBC (docs/clinical-reference.md §13)


@pytest.mark.parametrize(("value", "expected"), [
    (3.5, None), (3.4, 1), (3.0, 1), (2.99, 2), (2.0, 2), (1.99, 3), (1.0, 3), (0.99, 4),
])
def test_ctcae_v6_wbc_as_v5(value: float, expected: int | None) -> None:
    g6 = grade("ctcae-v6", "wbc", "low", value, lln=3.5)
    g5 = grade(V5, "wbc", "low", value, lln=3.5)
    assert (g6.grade if g6 else None) == expected == (g5.grade if g5 else None)
    if g6:
        assert (g6.term, g6.criteria) == ("White blood cell decreased", "CTCAE v6.0")


# ------------------------------------------------------------------ DAIDS v2.1 (docs/clinical-reference.md §12)

DAIDS = "daids-v2.1"
BIRTH = date(2026, 7, 1)


def _daids(analyte: str, value: float, days: int) -> int | None:
    key = criteria_for_age(DAIDS, BIRTH, None, BIRTH + timedelta(days=days))
    g = grade(key, analyte, "low", value)
    return g.grade if g else None


def test_age_in_days_from_birth_to_result() -> None:
    """Birth 1 July, result 2 July = 1 day (admiral compute_duration, days, no add_one)."""
    key = criteria_for_age(DAIDS, BIRTH, None, datetime(2026, 7, 2, 23, 59, tzinfo=UTC))
    assert parse_key(key).age_days == 1
    assert parse_key(key).basis == "birth_date"


@pytest.mark.parametrize(("days", "value", "expected"), [
    # > 7 days: G1 0.800-1.000 (1.000 inclusive), G2 0.600-0.799, G3 0.400-0.599, G4 < 0.400
    (8, 1.01, None), (8, 1.0, 1), (8, 0.8, 1), (8, 0.799, 2), (8, 0.6, 2), (8, 0.599, 3), (8, 0.4, 3),
    (8, 0.399, 4), (3000, 0.0, 4),
    # 2-7 days: G1 1.250-1.500 (1.500 inclusive)
    (2, 1.51, None), (2, 1.5, 1), (7, 1.5, 1), (7, 1.25, 1), (7, 1.249, 2), (7, 1.0, 2), (7, 0.999, 3),
    (7, 0.75, 3), (7, 0.749, 4),
    # <= 1 day: G1 4.000-5.000 (5.000 inclusive)
    (0, 5.01, None), (1, 5.0, 1), (1, 4.0, 1), (1, 3.999, 2), (1, 3.0, 2), (1, 2.999, 3), (1, 1.5, 3),
    (1, 1.499, 4),
])
def test_daids_anc(days: int, value: float, expected: int | None) -> None:
    assert _daids("neutrophils", value, days) == expected


@pytest.mark.parametrize(("days", "value", "expected"), [
    # > 7 days: G1 2.000-2.499, G2 1.500-1.999, G3 1.000-1.499, G4 < 1.000 (2.5 itself is not low)
    (8, 2.5, None), (8, 2.499, 1), (8, 2.0, 1), (8, 1.999, 2), (8, 1.5, 2), (8, 1.499, 3), (8, 1.0, 3),
    (8, 0.999, 4),
    # <= 7 days: G1 5.500-6.999, G2 4.000-5.499, G3 2.500-3.999, G4 < 2.500
    (7, 7.0, None), (7, 6.999, 1), (0, 5.5, 1), (0, 5.499, 2), (0, 4.0, 2), (0, 3.999, 3), (0, 2.5, 3),
    (0, 2.499, 4),
])
def test_daids_wbc(days: int, value: float, expected: int | None) -> None:
    assert _daids("wbc", value, days) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (0.65, None), (0.649, 1), (0.6, 1), (0.599, 2), (0.5, 2), (0.499, 3), (0.35, 3), (0.349, 4),
])
def test_daids_lymphocytes_over_five_years(value: float, expected: int | None) -> None:
    key = criteria_for_age(DAIDS, date(2000, 1, 1), None, date(2006, 1, 1))  # the 6th birthday: > 5 completed
    g = grade(key, "lymphocytes", "low", value)
    assert (g.grade if g else None) == expected


def test_daids_has_no_lymphocyte_criteria_to_five_years() -> None:
    """admiral counts completed years: the day before the 6th birthday is still 5 years."""
    key = criteria_for_age(DAIDS, date(2000, 1, 1), None, date(2005, 12, 31))
    assert grade(key, "lymphocytes", "low", 0.1) is None
    assert term_for(key, "lymphocytes", "low") is None


def test_daids_without_birth_date() -> None:
    """A stated age past 7 days chooses the > 7 days bands and says so; 0 years cannot choose."""
    adult = criteria_for_age(DAIDS, None, 40, None)
    assert grade(adult, "neutrophils", "low", 0.399).grade == 4
    assert "no birth_date" in criteria_source(adult)
    assert criteria_label(adult) == "DAIDS v2.1"
    infant = criteria_for_age(DAIDS, None, 0, None)
    assert grade(infant, "neutrophils", "low", 0.1) is None
    assert "age in days" in criteria_label(infant)
    unknown = criteria_for_age(DAIDS, None, None, None)
    assert grade(unknown, "wbc", "low", 0.9).grade == 4
    assert parse_key(unknown).basis == parse_key(DAIDS).basis == "adult"
    assert criteria_label(unknown) == "DAIDS v2.1 (age not given: adult bands)"
    untimed = criteria_for_age(DAIDS, date(1980, 1, 1), None, None)
    assert grade(untimed, "neutrophils", "low", 0.1) is None
    assert "unknown" in criteria_label(untimed)


def test_criteria_names_only_from_the_table() -> None:
    """User input is a version name; a criteria key (or anything else) is refused naming the field."""
    assert check_criteria("daids-v2.1") == "daids-v2.1"
    for bad in ("daids-v2.1@1d0y:birth_date", "ctcae-v7", {"a": 1}, None):
        with pytest.raises(InputError) as err:
            check_criteria(bad)
        assert err.value.field == "criteria"


def test_non_banded_versions_ignore_age() -> None:
    assert criteria_for_age(V5, BIRTH, None, BIRTH) == V5


def test_daids_in_assessment_output() -> None:
    a = assess({"patient": {"birth_date": "2026-07-01", "sex": "male"}, "criteria": "daids-v2.1",
                "observations": [{"analyte": "neutrophils", "value": 0.4, "unit": "10^9/L",
                                  "time": "2026-07-20T08:00:00Z"}]})
    f = a.finding("neutropenia")
    assert (a.criteria, f.criteria, f.grade, f.term) == ("DAIDS v2.1", "DAIDS v2.1", 3, "Absolute Neutrophil Count (ANC), Low")
    assert "age from birth_date" in f.source


def _independent_daids(rows: list[dict], value: float) -> int | None:
    """The table read without ordering: every row's interval, inclusive where the row says so."""
    hits = [r["grade"] for r in rows
            if (value <= r["below"] if r.get("inclusive") else value < r["below"]) and value >= r.get("at_least", 0)]
    assert len(hits) <= 1, "DAIDS rows overlap"
    return hits[0] if hits else None


@given(days=st.integers(min_value=0, max_value=40_000), value=st.floats(min_value=0, max_value=8, allow_nan=False),
       analyte=st.sampled_from(["neutrophils", "wbc"]))
def test_daids_one_band_per_age_and_a_partition(days: int, value: float, analyte: str) -> None:
    key = criteria_for_age(DAIDS, BIRTH, None, BIRTH + timedelta(days=days))
    rows = [r for r in criteria_table(DAIDS) if r["analyte"] == analyte
            and row_applies(r, days, completed_years(BIRTH, BIRTH + timedelta(days=days)))]
    assert sorted(r["grade"] for r in rows) == [1, 2, 3, 4]  # exactly one band holds every age
    g = grade(key, analyte, "low", value)
    assert (g.grade if g else None) == _independent_daids(rows, value)


@pytest.mark.parametrize(("birth", "on", "years"), [
    (date(2000, 1, 1), date(2005, 12, 31), 5), (date(2000, 1, 1), date(2006, 1, 1), 6),
    (date(2000, 2, 29), date(2006, 2, 28), 5), (date(2000, 2, 29), date(2006, 3, 1), 6),
    (date(2026, 7, 1), date(2026, 7, 1), 0),
])
def test_completed_years(birth: date, on: date, years: int) -> None:
    assert completed_years(birth, on) == years


@given(days=st.integers(min_value=0, max_value=4000), a=st.floats(min_value=0, max_value=8),
       b=st.floats(min_value=0, max_value=8))
def test_daids_monotone(days: int, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert (_daids("neutrophils", lo, days) or 0) >= (_daids("neutrophils", hi, days) or 0)


def _numeric_cutoffs() -> list[Any]:
    rows = load_table("criteria")["rows"]
    return [pytest.param(r, id=f"{r['version']}-{r['analyte']}-{r['direction']}-G{r['grade']}"
                         f"-{r.get('min_age_days', '')}-{r.get('max_age_days', '')}") for r in rows]


@pytest.mark.parametrize("row", _numeric_cutoffs())
def test_every_cutoff_as_a_bound(row: dict[str, Any]) -> None:
    """Each row's own cut-offs, read as a reported bound: '<x' (just below x) and the value itself.

    A low row's upper cut-off b: just below b the row holds; b itself only if the row is inclusive.
    Its lower cut-off a (at_least): a itself holds, just below a does not. High rows mirror this.
    """
    lln = uln = None
    if row["direction"] == "low":
        b = 2 * float(row.get("at_least", 1.0)) + 1 if row["below"] == "LLN" else float(row["below"])
        lln = b
        a = float(row.get("at_least", 0.0))
        assert row_holds(row, nextafter(b, -inf), lln, uln)
        assert row_holds(row, b, lln, uln) == bool(row.get("inclusive"))
        assert row_holds(row, a, lln, uln)
        if "at_least" in row:
            assert not row_holds(row, nextafter(a, -inf), lln, uln)
    else:
        a = 1000.0 if row["above"] == "ULN" else float(row["above"])
        uln = a
        assert row_holds(row, nextafter(a, inf), lln, uln)
        assert not row_holds(row, a, lln, uln)
        if "at_most" in row:
            assert row_holds(row, float(row["at_most"]), lln, uln)
            assert not row_holds(row, nextafter(float(row["at_most"]), inf), lln, uln)


def test_history_grades_each_draw_at_its_own_age() -> None:
    """A newborn's draws on days 1, 4 and 19 fall in three DAIDS ANC bands (<= 1 d, 2-7 d, > 7 d)."""
    draws = [(0.9, "2026-07-02T08:00:00Z"), (0.8, "2026-07-05T08:00:00Z"), (0.7, "2026-07-20T08:00:00Z")]
    obs = [{"analyte": "neutrophils", "value": v, "unit": "10*9/L", "time": t} for v, t in draws]
    h = build_history({"patient": {"sex": "female", "birth_date": "2026-07-01"}, "criteria": DAIDS,
                       "observations": obs})
    assert [p.grade for p in h.series["neutrophils"]] == [4, 3, 2]
    assert h.criteria == "DAIDS v2.1"


@given(row=st.sampled_from(load_table("criteria")["rows"]), value=st.floats(min_value=0, max_value=200),
       lln=st.one_of(st.none(), st.floats(min_value=0.1, max_value=200)),
       uln=st.one_of(st.none(), st.floats(min_value=0.1, max_value=200)))
def test_interval_form_is_the_row(row: dict[str, Any], value: float, lln: float | None, uln: float | None) -> None:
    """The join-friendly interval form grades exactly as the row reader (for the population engines)."""
    assert interval_holds(as_interval(row), value, lln, uln) == row_holds(row, value, lln, uln)


@pytest.mark.parametrize("version", ["ctcae-v5", "ctcae-v6", "daids-v2.1"])
def test_interval_form_on_every_cutoff(version: str) -> None:
    for iv, row in zip(criteria_intervals(version), criteria_table(version), strict=True):
        for end in (iv.lower, iv.upper):
            if isinstance(end, float):
                for v in (nextafter(end, -inf), end, nextafter(end, inf)):
                    assert interval_holds(iv, v, 1.0, 400.0) == row_holds(row, v, 1.0, 400.0)
