"""One blood draw -> flagged counts, each judged against the range that applies to this person."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from math import inf, nextafter

from ..knowledge import derived
from ..model import ANALYTES, Count, Observation, Patient, ReferenceRange
from .differential import derive_draw
from .ranges import ResolvedRange, age_band, flag, resolve_range


@dataclass
class Draw:
    """The counts of one blood draw (one time point), with the warnings it raised."""

    time: datetime | None
    counts: dict[str, Count]
    warnings: list[str] = field(default_factory=list)


#: How a count is judged: the range, what the Count says of it (the range, its name) and the
#: sources of its lower and upper limits.
Judged = tuple[ResolvedRange, ReferenceRange, str, str | None, str | None]


@derived(maxsize=65536)
def _judged_by(profile: str, analyte: str, sex: str, age: float | None, lab: ReferenceRange | None) -> Judged:
    """Worked out once per range: every count of every draw judged against it needs the same."""
    rng = resolve_range(profile, analyte, sex, age, False, lab)
    return (rng, rng.reference_range, rng.describe(profile), rng.low.source if rng.low else None,
            rng.high.source if rng.high else None)


@derived(maxsize=16384)
def _profile_judgements(profile: str, sex: str, age: float | None) -> dict[str, Judged]:
    """Every analyte's judgement for one person without lab ranges: one cache probe per draw instead
    of one per count (read-only: shared by every draw of such a person)."""
    return {analyte: _judged_by(profile, analyte, sex, age, None) for analyte in ANALYTES}


def directed(value: float, comparator: str) -> float:
    """A reported bound as the value every rule compares: `<x` is just below x (the largest float
    under it), `>x` just above, `<=x`/`>=x` x itself. Each cut-off test then reads the bound the way
    the lab meant it (`<0.5` satisfies "< 0.5"; `<1.0` is grade 3, not 2), with no rule knowing about
    comparators, and the grade is the mildest the bound allows. One ulp never shows in the output:
    every number is printed to at most six significant digits."""
    if comparator == "<" and value > 0:
        return nextafter(value, -inf)
    if comparator == ">":
        return nextafter(value, inf)
    return value


def evaluate_draw(observations: list[Observation], patient: Patient, profile: str,
                  time: datetime | None) -> Draw:
    """Derive absolute counts, pick each range (lab first, then profile) and flag low/high."""
    values, warnings = derive_draw(observations)
    age = age_band(profile, patient.age_at(time))  # ranges depend on the band only
    by_profile = _profile_judgements(profile, patient.sex, age)
    counts: dict[str, Count] = {}
    for analyte in ANALYTES:  # the report order
        dv = values.get(analyte)
        if dv is None:
            continue
        value, unit, percent, derived, derivation, obs, comparator = dv
        if comparator is not None:
            value = directed(value, comparator)
        measured = None if derived else obs  # a derived count has no lab range of its own
        lab = None if measured is None else measured.reference_range
        rng, reference_range, range_source, low_source, high_source = (
            by_profile[analyte] if lab is None else _judged_by(profile, analyte, patient.sex, age, lab))
        # Positional, in Count's field order: keywords cost twice as much on the per-request path.
        counts[analyte] = Count(
            analyte, value, unit, flag(value, rng), derived, percent, reference_range, range_source,
            comparator, time, derivation, low_source, high_source,
        )
    return Draw(time, counts, warnings)


def percent_flag(analyte: str, pct: float, patient: Patient, profile: str, time: datetime | None) -> str:
    """Flag a differential percentage against the article/MedlinePlus % ranges (shown, never a finding)."""
    rng = resolve_range(profile, analyte, patient.sex, patient.age_at(time), True, None)
    return flag(pct, rng)
