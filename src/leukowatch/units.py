"""Count units -> canonical units, and LOINC codes -> analytes.

Labs spell the same unit a dozen ways (10*3/uL, K/uL, thou/mm3, x10E3/uL, G/L); UCUM covers only
some of them, so the spellings live in `knowledge/units.toml` as an alias table, normalised the
same way on both sides. A unit that does not fit the analyte (g/dL for a WBC) is an error naming
both, never a guess: a factor-of-1000 mistake would turn a normal count into agranulocytosis.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from math import isfinite
from typing import Any, NamedTuple

from .knowledge import derived, load_table
from .model import CANONICAL_UNIT, DIFFERENTIAL_ANALYTES, InputError

#: Which unit dimension each analyte accepts as an absolute value.
_DIMENSION_OF: dict[str, str] = {
    **{a: "count" for a in ("wbc", "neutrophils", "bands", "segmented_neutrophils", "lymphocytes",
                            "monocytes", "eosinophils", "basophils")},
    "platelets": "platelets",
    "hemoglobin": "hemoglobin",
    "rbc": "rbc",
    "hematocrit": "hematocrit",
}


@derived(maxsize=4096)
def normalise_unit(text: str) -> str:
    """Fold the cosmetic differences labs introduce: case, spaces, micro signs, ^ vs *, 'x' prefix."""
    u = text.strip().replace("µ", "u").replace("μ", "u").replace("^", "*").replace(" ", "")
    u = u.lower()
    if u.startswith("x") and len(u) > 1 and (u[1].isdigit() or u[1] == "*"):
        u = u[1:]
    return u.replace("10e", "10*").replace("10.e", "10*").replace("×", "")


@derived
def _unit_tables() -> dict[str, dict[str, float]]:
    raw = load_table("units")
    tables: dict[str, dict[str, float]] = {}
    for dimension, entries in raw.items():
        if dimension == "plausibility":
            continue
        table: dict[str, float] = {}
        for entry in entries:
            if "same_as" in entry:
                continue
            for spelling in entry["spellings"]:
                table[normalise_unit(spelling)] = float(entry["factor"])
        tables[dimension] = table
    for dimension, entries in raw.items():
        if dimension != "plausibility":
            for entry in entries:
                if "same_as" in entry:
                    tables[dimension] = {**tables.get(dimension, {}), **tables[entry["same_as"]]}
    return tables


@derived
def plausibility() -> dict[str, float]:
    return load_table("units")["plausibility"]


class Converted(NamedTuple):
    """A value in the analyte's canonical unit, with the factor that got it there (ranges use it too)."""

    value: float
    unit: str
    percent: bool
    factor: float


def _conversion_of(analyte: str, unit: Any) -> Converted | str:
    """What one unit of `unit` is for `analyte` (value = factor), or the problem with the unit."""
    if analyte not in _DIMENSION_OF:
        return f"unknown analyte {analyte!r}"
    if unit is None or not str(unit).strip():
        return f"missing unit for {analyte}"
    tables = _unit_tables()
    key = normalise_unit(str(unit))
    if analyte in DIFFERENTIAL_ANALYTES and key in tables["percent"]:
        factor = tables["percent"][key]
        return Converted(factor, "%", True, factor)
    dimension = _DIMENSION_OF[analyte]
    factor = tables[dimension].get(key)
    if factor is None:
        if any(key in t for t in tables.values()):
            return (f"unit {unit!r} does not fit analyte {analyte!r} "
                    f"(expected a {dimension} unit such as {CANONICAL_UNIT[analyte]})")
        return f"unknown unit {unit!r} for analyte {analyte!r}"
    return Converted(factor, CANONICAL_UNIT[analyte], False, factor)


# Labs send a handful of spellings, so the answer per (analyte, spelling) is worked out once. Only
# for text: the problem quotes the unit as given, and 5 and 5.0 would share a cache entry.
_cached_conversion = lru_cache(maxsize=4096)(_conversion_of)


#: The factor of an analyte's canonical unit to itself: a unit with a smaller factor is a smaller unit.
CANONICAL_FACTOR = 1.0


def smaller_than_canonical(factor: float) -> bool:
    """Whether a unit's factor makes it a smaller unit than the canonical one (cells per microlitre against
    10^9/L): a count sent in it and read as the canonical unit would be a thousand-fold slip."""
    return factor < CANONICAL_FACTOR


def conversion(analyte: str, unit: Any, field: str) -> Converted:
    """The factor, canonical unit and percent flag of one unit spelling for an analyte (the value is
    the factor), or InputError naming the field. `convert` is this times the value."""
    rule = _cached_conversion(analyte, unit) if type(unit) is str else _conversion_of(analyte, unit)
    if type(rule) is str:
        raise InputError(field, rule)
    return rule


def convert(analyte: str, value: float, unit: str | None, field: str) -> Converted:
    """Convert one value to the analyte's canonical unit, or raise InputError naming the field.

    A differential analyte in '%' stays a percentage (the caller derives the absolute count from
    the WBC); any other mismatch between unit and analyte is an error.
    """
    rule = conversion(analyte, unit, field)
    return Converted(value * rule.factor, rule.unit, rule.percent, rule.factor)


class LoincEntry(NamedTuple):
    """What one LOINC code measures, and whether as a percentage of the WBC."""

    analyte: str
    percent: bool


@derived
def _loinc_codes() -> dict[str, LoincEntry]:
    codes = load_table("loinc")["codes"]
    return {code: LoincEntry(e["analyte"], e["kind"] == "percent") for code, e in codes.items()}


@derived(maxsize=1024)
def loinc_lookup(code: str) -> LoincEntry | None:
    """The analyte a LOINC code measures, or None when leukowatch does not use that code."""
    return _loinc_codes().get(code.strip())


def loinc_codes_for(analyte: str, percent: bool = False) -> list[str]:
    """Every LOINC code for an analyte (absolute or %), e.g. for a FHIR search or a screen filter."""
    return [c for c, e in _loinc_codes().items() if e.analyte == analyte and e.percent == percent]


@derived
def _limits() -> tuple[float, float, float, str]:
    limits = plausibility()
    return (limits["min_value"], limits["max_percent"], limits["max_wbc"], f"{limits['max_wbc']:g}")


def plausible_range(analyte: str, percent: bool) -> tuple[float, float]:
    """The converted values `check_plausible` accepts, as [low, high]: where there is no ceiling,
    the largest float, so that infinity (and NaN, which compares false) still fails. A caller that
    checks many values compares with these and asks `check_plausible` only for the message."""
    min_value, max_percent, max_wbc, _ = _limits()
    if percent:
        return min_value, max_percent
    if analyte == "wbc":
        return min_value, max_wbc
    return min_value, sys.float_info.max


def check_plausible(analyte: str, value: float, percent: bool, field: str) -> None:
    """Refuse values no lab would release: negative counts, % outside 0-100, WBC beyond 1,000 x10^9/L."""
    low, high = plausible_range(analyte, percent)
    if low <= value <= high:
        return
    if not isfinite(value):
        raise InputError(field, f"{analyte} value is not a finite number")
    if value < low:
        raise InputError(field, f"{analyte} value {value:g} is negative")
    if percent:
        raise InputError(field, f"{analyte} percentage {value:g}% is above 100%")
    # Only the WBC has a finite ceiling among absolute counts.
    raise InputError(field, f"wbc {value:g} x10^9/L is implausible (above {_limits()[3]}); check the unit")


@derived(maxsize=1024)
def _analyte_named(name: str) -> str | None:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in _DIMENSION_OF:
        return key
    return load_table("loinc")["analyte_aliases"].get(key)


def canonical_analyte(name: str, field: str) -> str:
    """Map an analyte name or accepted alias ('ANC', 'hgb') to the canonical analyte."""
    analyte = _analyte_named(name)
    if analyte is None:
        raise InputError(field, f"unknown analyte {name!r}; known: {', '.join(sorted(_DIMENSION_OF))}")
    return analyte


@derived
def _temperature_units() -> dict[str, str]:
    units = load_table("temperature")["units"]
    return {spelling.strip().casefold(): scale for scale in ("celsius", "fahrenheit") for spelling in units[scale]}


def body_temperature_code(code: str) -> str | None:
    """What a LOINC body-temperature code measures ("Oral temperature"), or None when it is none
    (knowledge/temperature.toml)."""
    return load_table("temperature")["codes"].get(code.strip())


def temperature_scale(unit: str | None) -> str | None:
    """"celsius" or "fahrenheit" for a temperature unit as sent (Cel, [degF], °C, F...); None when
    the unit is missing or no temperature unit (then the value is not used: the scale is never guessed)."""
    return _temperature_units().get(unit.strip().casefold()) if unit else None


def celsius_text(temperature_c: float) -> str:
    """A temperature as every text shows it ("38.9 °C")."""
    return f"{temperature_c:.1f} °C"


def fahrenheit_to_celsius(fahrenheit: float) -> float:
    """°F -> °C: one conversion for `--temp-f`/`temperature_f` and a [degF] temperature a lab file sends."""
    return (fahrenheit - 32.0) * 5.0 / 9.0


def body_temperature_problem(temperature_c: float, shown: str) -> str | None:
    """Why a temperature (in °C, `shown` as sent) is no body temperature (units.toml plausibility),
    or None when it is one. NaN compares false, so it is refused too."""
    limits = plausibility()
    low, high = limits["min_body_temp_c"], limits["max_body_temp_c"]
    if low <= temperature_c <= high:
        return None
    return f"{shown} is not a body temperature (expected {low:g}-{high:g} °C)"
