"""Time-course rules over a person's draws: grouping results into draws, chronic vs acute.

Shared by the single-request assessment (a request may carry earlier observations) and by the
history and population engines, so "chronic" means the same thing everywhere: low on at least
`min_low_results` occasions spanning at least `min_span_days` (the article's "three occasions over
3 months", read as 90 days so every engine agrees to the day).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from ..knowledge import load_table
from ..model import Chronicity, Observation


def chronic_rule() -> dict:
    return load_table("timeline")["chronic"]


def group_draws(observations: list[Observation]) -> list[tuple[datetime | None, list[Observation]]]:
    """Observations grouped by time, oldest first; untimed ones join the latest draw (they are 'now')."""
    by_time: dict[datetime | None, list[Observation]] = defaultdict(list)
    for obs in observations:
        by_time[obs.time].append(obs)
    timed = sorted(t for t in by_time if t is not None)
    untimed = by_time.pop(None, [])
    if not timed:
        return [(None, untimed)]
    draws = [(t, by_time[t]) for t in timed]
    draws[-1] = (draws[-1][0], draws[-1][1] + untimed)
    return draws


@dataclass(frozen=True)
class LowResult:
    time: datetime
    value: float


def chronic_evidence(lows: list[LowResult]) -> list[LowResult] | None:
    """The earliest window of low results meeting the chronic rule, or None.

    Any `min_low_results` lows whose first and last are at least `min_span_days` apart satisfy the
    rule; the evidence returned is the first low, the last low at least the span later, and the lows
    between them (what a clinician would cite).
    """
    rule = chronic_rule()
    need, span = int(rule["min_low_results"]), int(rule["min_span_days"])
    ordered = sorted(lows, key=lambda r: r.time)
    for i, first in enumerate(ordered):
        for j in range(len(ordered) - 1, i, -1):
            last = ordered[j]
            if (last.time - first.time).days >= span and j - i + 1 >= need:
                return ordered[i:j + 1]
    return None


def chronicity(analyte: str, lows: list[LowResult], n_results: int, low_now: bool, unit: str = "x10^9/L"
               ) -> Chronicity:
    """Chronic / acute / undetermined for one analyte from its low results, with the evidence."""
    rule = chronic_rule()
    evidence = chronic_evidence(lows)
    if evidence is not None:
        cited = "; ".join(f"{r.time.date().isoformat()}: {r.value:.2f} {unit}" for r in evidence)
        days = (evidence[-1].time - evidence[0].time).days
        return Chronicity("chronic", analyte, [
            f"{len(evidence)} low {analyte} results over {days} days ({cited})",
            f"rule: low on >= {rule['min_low_results']} occasions spanning >= {rule['min_span_days']} days "
            f"({rule['source']})",
        ])
    if n_results <= 1:
        return Chronicity("undetermined", analyte, [
            "one result only: chronicity needs repeated counts "
            f"(>= {rule['min_low_results']} low results over >= {rule['min_span_days']} days)"])
    if low_now:
        return Chronicity("acute", analyte, [
            f"low now; {len(lows)} low result(s) among {n_results}, which does not meet the chronic rule "
            f"(>= {rule['min_low_results']} low results spanning >= {rule['min_span_days']} days)"])
    return Chronicity("undetermined", analyte, [
        f"not low now; {len(lows)} low result(s) among {n_results} earlier results"])


@dataclass(frozen=True)
class Point:
    """One result of one analyte in a person's series, already judged (low or not, grade)."""

    time: datetime
    value: float
    low: bool
    grade: int | None = None


@dataclass(frozen=True)
class Episode:
    """A run of consecutive low results: onset, nadir, worst grade, and when it recovered.

    `recovery` is the first result that is no longer low (None while the episode is ongoing);
    `duration_days` runs from onset to recovery, or to the last low result if not yet recovered.
    """

    analyte: str
    onset: datetime
    last_low: datetime
    nadir_value: float
    nadir_time: datetime
    worst_grade: int | None
    n_low: int
    recovery: datetime | None

    @property
    def duration_days(self) -> int:
        return ((self.recovery or self.last_low) - self.onset).days


def episodes(analyte: str, points: list[Point]) -> list[Episode]:
    """Gaps-and-islands over time-ordered results: each island of lows is one episode.

    The population engine computes the same islands with window functions; the parity test holds
    both to identical onset, nadir, worst grade and recovery.
    """
    out: list[Episode] = []
    run: list[Point] = []
    for p in sorted(points, key=lambda q: q.time):
        if p.low:
            run.append(p)
            continue
        if run:
            out.append(_episode(analyte, run, p.time))
            run = []
    if run:
        out.append(_episode(analyte, run, None))
    return out


def _episode(analyte: str, run: list[Point], recovery: datetime | None) -> Episode:
    nadir = min(run, key=lambda q: (q.value, q.time))  # earliest of equal nadirs
    grades = [q.grade for q in run if q.grade is not None]
    return Episode(analyte, run[0].time, run[-1].time, nadir.value, nadir.time,
                   max(grades) if grades else None, len(run), recovery)
