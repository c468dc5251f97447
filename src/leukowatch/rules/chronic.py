"""Draws and chronicity: the part of the time-course rules every single assessment needs.

Kept apart from `timeline` (episodes, cyclic, chemotherapy, drug timing) so that `leukowatch
assess` imports only this; "chronic" means the same everywhere: low on at least `min_low_results`
occasions spanning at least `min_span_days` (the article's "three occasions over 3 months", read as
90 days so every engine agrees to the day).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import NamedTuple

from ..knowledge import derived, load_table
from ..model import Chronicity, Observation


@derived
def chronic_rule() -> dict:
    return load_table("timeline")["chronic"]


@derived
def _window() -> tuple[int, int]:
    """(lows needed, days they must span), read once."""
    rule = chronic_rule()
    return int(rule["min_low_results"]), int(rule["min_span_days"])


def group_draws(observations: list[Observation]) -> list[tuple[datetime | None, list[Observation]]]:
    """Observations grouped by time, oldest first; untimed ones join the latest draw (they are 'now')."""
    for obs in observations:
        if obs.time is not None:
            break
    else:  # one CBC without times: the usual request
        return [(None, list(observations))]
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


class LowResult(NamedTuple):
    """One low result in a series: what the chronic rule counts."""

    time: datetime
    value: float


def chronic_evidence(lows: list[LowResult]) -> list[LowResult] | None:
    """The earliest window of low results meeting the chronic rule, or None.

    Any `min_low_results` lows whose first and last are at least `min_span_days` apart satisfy the
    rule; the evidence returned is the first low, the last low at least the span later, and the lows
    between them (what a clinician would cite).
    """
    need, span = _window()
    if len(lows) < max(need, 2):  # a window has a first and a later last low
        return None
    ordered = sorted(lows, key=lambda r: r.time)
    for i, first in enumerate(ordered):
        for j in range(len(ordered) - 1, i, -1):
            last = ordered[j]
            if (last.time - first.time).days >= span and j - i + 1 >= need:
                return ordered[i:j + 1]
    return None


@derived
def not_chronic_text() -> str:
    """What "acute" means here, in words: the lows do not meet the article's chronic rule (status
    "acute" is the contract's word; a reader is never shown a bare "acute")."""
    rule = chronic_rule()
    return (f"not chronic by the article's rule (needs >= {rule['min_low_results']} low results over >= "
            f"{rule['span_words']}, read as {rule['min_span_days']} days)")


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
            f"low now; {len(lows)} low result(s) among {n_results}: {not_chronic_text()}"])
    if lows:
        return Chronicity("acute", analyte, [
            f"{len(lows)} low result(s) among {n_results}, recovered since: {not_chronic_text()}"])
    return Chronicity("undetermined", analyte, [f"no low result among {n_results}"])
