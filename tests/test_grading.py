"""CTCAE grading at every boundary (clinical-reference §2; admiral's strict-inequality rule)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leukowatch.knowledge import load_table
from leukowatch.rules.grading import criteria_rows, grade

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
