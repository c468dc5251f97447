"""Unit conversion and LOINC mapping (clinical-reference §10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leukowatch.model import InputError
from leukowatch.units import check_plausible, convert, loinc_codes_for, loinc_lookup, normalise_unit

SAME_AS_10E9 = ["10*9/L", "10^9/L", "x10*9/L", "G/L", "G/l", "10*3/uL", "10^3/µL", "10*3/μL", "K/uL", "K/µL",
                "x10^3/µl", "x10E3/uL", "thou/mm3", "10*3/mm3", "/nL", "10*9.{cells}/L", "10*6/mL"]
PER_UL = ["/uL", "/µL", "cells/uL", "{cells}/uL", "/mm3", "cells/mm3", "/cumm"]


@pytest.mark.parametrize("unit", SAME_AS_10E9)
def test_count_units_equal_to_10e9_per_litre(unit: str) -> None:
    c = convert("wbc", 4.2, unit, "u")
    assert c.value == pytest.approx(4.2)
    assert c.unit == "10^9/L" and not c.percent


@pytest.mark.parametrize("unit", PER_UL)
def test_cells_per_microlitre(unit: str) -> None:
    assert convert("neutrophils", 710, unit, "u").value == pytest.approx(0.71)


@given(value=st.floats(min_value=0, max_value=1e6, allow_nan=False),
       unit=st.sampled_from(SAME_AS_10E9 + PER_UL))
def test_conversion_is_linear_and_consistent(value: float, unit: str) -> None:
    """Every count spelling is one of two factors, and per-uL is exactly 1/1000 of 10^9/L."""
    c = convert("platelets", value, unit, "u")
    expected = value if unit in SAME_AS_10E9 else value / 1000
    assert c.value == pytest.approx(expected)


def test_percent_for_differential_only() -> None:
    assert convert("lymphocytes", 34, "%", "u").percent
    with pytest.raises(InputError, match="does not fit analyte 'wbc'"):
        convert("wbc", 34, "%", "observations[0].unit")


def test_hemoglobin_units() -> None:
    assert convert("hemoglobin", 120, "g/L", "u").value == pytest.approx(12.0)
    assert convert("hemoglobin", 8.0, "mmol/L", "u").value == pytest.approx(12.89, rel=1e-3)
    with pytest.raises(InputError, match="does not fit"):
        convert("hemoglobin", 4.0, "K/uL", "u")


def test_unknown_and_missing_units_name_the_field() -> None:
    with pytest.raises(InputError) as e:
        convert("wbc", 4.0, "bananas/uL", "observations[2].unit")
    assert e.value.field == "observations[2].unit" and "bananas/uL" in e.value.problem and "wbc" in e.value.problem
    with pytest.raises(InputError, match="missing unit"):
        convert("wbc", 4.0, None, "u")


def test_normalise() -> None:
    assert normalise_unit(" x10^3 / µL ") == normalise_unit("10*3/uL")


@pytest.mark.parametrize(("code", "analyte", "percent"), [
    ("6690-2", "wbc", False), ("26464-8", "wbc", False), ("804-5", "wbc", False),
    ("751-8", "neutrophils", False), ("26499-4", "neutrophils", False), ("753-4", "neutrophils", False),
    ("770-8", "neutrophils", True), ("26511-6", "neutrophils", True), ("23761-0", "neutrophils", True),
    ("30229-9", "bands", False), ("26507-4", "bands", False), ("35332-6", "bands", True),
    ("26508-2", "bands", True), ("764-1", "bands", True), ("30451-9", "segmented_neutrophils", False),
    ("26505-8", "segmented_neutrophils", True), ("769-0", "segmented_neutrophils", True),
    ("731-0", "lymphocytes", False), ("26474-7", "lymphocytes", False), ("736-9", "lymphocytes", True),
    ("26478-8", "lymphocytes", True), ("742-7", "monocytes", False), ("26484-6", "monocytes", False),
    ("5905-5", "monocytes", True), ("26485-3", "monocytes", True), ("744-3", "monocytes", True),
    ("711-2", "eosinophils", False), ("26449-9", "eosinophils", False), ("713-8", "eosinophils", True),
    ("26450-7", "eosinophils", True), ("704-7", "basophils", False), ("26444-0", "basophils", False),
    ("706-2", "basophils", True), ("30180-4", "basophils", True), ("718-7", "hemoglobin", False),
    ("777-3", "platelets", False), ("26515-7", "platelets", False),
])
def test_loinc_table(code: str, analyte: str, percent: bool) -> None:
    entry = loinc_lookup(code)
    assert entry is not None and entry.analyte == analyte and entry.percent == percent


def test_blasts_code_is_not_basophils() -> None:
    assert loinc_lookup("26446-5") is None
    assert "26446-5" not in loinc_codes_for("basophils", percent=True)


@pytest.mark.parametrize(("analyte", "value", "percent", "message"), [
    ("wbc", -1.0, False, "negative"),
    ("wbc", 1200.0, False, "implausible"),
    ("lymphocytes", 140.0, True, "above 100%"),
    ("wbc", float("nan"), False, "finite"),
])
def test_implausible_values_are_errors(analyte: str, value: float, percent: bool, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_plausible(analyte, value, percent, "observations[0].value")
