"""The population page's numbers: the population screen (`leukowatch.population.screen`) run over the
store, cached until the store changes.

The screen is the same relational pipeline `leukowatch screen` runs, so the page and the batch
report agree. It reads the DuckDB file itself, so the service's own connection is closed meanwhile.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import Store

_lock = threading.Lock()
#: The patient list reuses a screen this recent even when the store has changed since: a lab feed
#: changes the store every few seconds, and each new screen pauses the store's writer while it reads
#: the file. The list says when its findings were computed. The population page always re-screens.
LIST_MAX_AGE_S = 300.0


@dataclass
class PersonFindings:
    """What the screen found for one person: the grades seen per finding, and the person's flags.

    Kept beside the summary so the patient list can show a findings column and the population
    page's counts can click through to the persons behind them, from the same screen run.
    """

    grades: dict[str, set[int | None]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def worst(self, finding: str) -> int | None:
        known = [g for g in self.grades.get(finding, ()) if g is not None]
        return max(known) if known else None

    @property
    def worst_any(self) -> int:
        """The highest grade of any finding (-1 with no graded finding): the list's sort key."""
        return max((g for gs in self.grades.values() for g in gs if g is not None), default=-1)


@dataclass
class Screened:
    """One screen of the store: its summary, what it found per person, and when it ran."""

    stamp: tuple[float, int]
    summary: dict[str, Any]
    persons: dict[str, PersonFindings]
    at: float  # time.time() when it finished


_cache: dict[str, Screened] = {}


def _stamp(path: str) -> tuple[float, int]:
    p = Path(path)
    wal = Path(path + ".wal")
    st = p.stat()
    return (max(st.st_mtime, wal.stat().st_mtime if wal.exists() else 0.0), st.st_size)


def _screened(store: Store, max_age_s: float | None = None) -> Screened | None:
    """The screen of the store: cached while the store is unchanged (or, with `max_age_s`, while the
    cached one is that recent); None when there is no store file."""
    from ..population import screen

    recent = _cache.get(store.path or "")
    if recent and max_age_s is not None and time.time() - recent.at < max_age_s:
        return recent
    with _lock, store.exclusive() as path:
        if not Path(path).exists():
            return None
        stamp = _stamp(path)
        cached = _cache.get(path)
        if cached and cached.stamp == stamp:
            return cached
        with tempfile.TemporaryDirectory(prefix="leukowatch-pop-") as out:
            result = screen([path], out)
            persons = _person_findings(result.table("findings"), result.table("flags"))
        _cache[path] = Screened(stamp, result.summary, persons, time.time())
        return _cache[path]


def _person_findings(findings: Any, flags: Any) -> dict[str, PersonFindings]:
    persons: dict[str, PersonFindings] = defaultdict(PersonFindings)
    pairs = findings.select(["patient_id", "finding", "grade"]).group_by(["patient_id", "finding", "grade"]).aggregate([])
    for row in pairs.to_pylist():
        persons[row["patient_id"]].grades.setdefault(row["finding"], set()).add(row["grade"])
    names = [c for c in flags.column_names if c not in ("patient_id", "sex")]
    for row in flags.to_pylist():
        on = [n for n in names if row[n]]
        if on:
            persons[row["patient_id"]].flags = on
    return dict(persons)


def population_summary(store: Store) -> dict[str, Any]:
    """The screen's summary for the whole store (persons, by finding and grade, chronic, drugs)."""
    screened = _screened(store)
    return screened.summary if screened else {}


def person_findings(store: Store) -> tuple[dict[str, PersonFindings], float | None]:
    """patient_id -> what the screen found for that person (persons without findings absent), and
    when that screen ran (None without a store); a screen up to `LIST_MAX_AGE_S` old is reused."""
    screened = _screened(store, LIST_MAX_AGE_S)
    return (screened.persons, screened.at) if screened else ({}, None)


def by_finding_and_grade(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Sum the screen's finding x grade x sex x age-band rows over sex and age band, for the chart."""
    totals: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    for row in summary.get("by_finding", []):
        t = totals[(row["finding"], row["grade"])]
        t[0] += int(row["results"])
        t[1] += int(row["persons"])
    rows = [{"finding": f, "grade": g, "results": r, "persons": p} for (f, g), (r, p) in totals.items()]
    rows.sort(key=lambda r: (r["finding"], -1 if r["grade"] is None else r["grade"]))
    peak = max((r["results"] for r in rows), default=1) or 1
    for r in rows:
        r["pct"] = round(100 * r["results"] / peak)
    return rows
