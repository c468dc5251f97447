"""The population page's numbers: the population screen (`leukowatch.population.screen`) run over the
store, cached until the store changes.

The screen is the same relational pipeline `leukowatch screen` runs, so the page and the batch
report agree. It reads the DuckDB file itself, so the service's own connection is closed meanwhile.
"""

from __future__ import annotations

import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from .db import Store

_cache: dict[str, tuple[tuple[float, int], dict[str, Any]]] = {}
_lock = threading.Lock()


def _stamp(path: str) -> tuple[float, int]:
    p = Path(path)
    wal = Path(path + ".wal")
    st = p.stat()
    return (max(st.st_mtime, wal.stat().st_mtime if wal.exists() else 0.0), st.st_size)


def population_summary(store: Store) -> dict[str, Any]:
    """The screen's summary for the whole store (persons, by finding and grade, chronic, drugs)."""
    from ..population import screen

    with _lock, store.exclusive() as path:
        if not Path(path).exists():
            return {}
        stamp = _stamp(path)
        cached = _cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        with tempfile.TemporaryDirectory(prefix="leukowatch-pop-") as out:
            summary = screen([path], out).summary
        _cache[path] = (stamp, summary)
        return summary


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
