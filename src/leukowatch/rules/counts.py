"""One blood draw -> flagged counts, each judged against the range that applies to this person."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..model import ANALYTES, Count, Observation, Patient
from .differential import derive_draw
from .ranges import flag, resolve_range


@dataclass
class Draw:
    """The counts of one blood draw (one time point), with the warnings it raised."""

    time: datetime | None
    counts: dict[str, Count]
    warnings: list[str] = field(default_factory=list)


def evaluate_draw(observations: list[Observation], patient: Patient, profile: str,
                  time: datetime | None) -> Draw:
    """Derive absolute counts, pick each range (lab first, then profile) and flag low/high."""
    values, warnings = derive_draw(observations)
    age = patient.age_at(time)
    counts: dict[str, Count] = {}
    for analyte, dv in values.items():
        obs = dv.observation
        lab = obs.reference_range if (obs is not None and not dv.derived) else None
        rng = resolve_range(profile, analyte, patient.sex, age, False, lab)
        counts[analyte] = Count(
            analyte=analyte, value=dv.value, unit=dv.unit, flag=flag(dv.value, rng), derived=dv.derived,
            percent=dv.percent, reference_range=rng.reference_range, range_source=rng.describe(profile),
            comparator=obs.comparator if obs is not None and not dv.derived else None,
            time=time, derivation=dv.derivation,
            low_source=rng.low.source if rng.low else None, high_source=rng.high.source if rng.high else None,
        )
    order = {a: i for i, a in enumerate(ANALYTES)}
    return Draw(time, dict(sorted(counts.items(), key=lambda kv: order[kv[0]])), warnings)


def percent_flag(analyte: str, pct: float, patient: Patient, profile: str, time: datetime | None) -> str:
    """Flag a differential percentage against the article/MedlinePlus % ranges (shown, never a finding)."""
    rng = resolve_range(profile, analyte, patient.sex, patient.age_at(time), True, None)
    return flag(pct, rng)
