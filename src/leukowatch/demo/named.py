"""Named demo patients: the few histories the README and docs/ show by name (demo-cloz, demo-cyclic,
demo-2y, demo-amox), stored by `leukowatch demo load` beside the generated population.

The generated population has random ids (P000001...) that change with `--persons`; documentation
needs patients whose story is fixed: a clozapine agranulocytosis that recovered after the stop, a
cyclic neutropenia sampled Mon/Wed/Fri with two earlier clinic visits, two years of results with a
drug episode and chemotherapy cycles, and a recovered grade 4 episode on amoxicillin (the latest
draw is normal, the history is not). Each is a project JSON request (what `assess` takes) with
fixed dates and a fixed random seed, so every run of the docs prints the same output. The values
are design values of synthetic data, chosen clearly on one side of the `standard` limits; no rule
reads them.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

#: The first draw of every named history (a Monday).
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
#: Lymphocytes of an unremarkable draw, 10^9/L.
LYMPHOCYTES = 1.6
#: WBC = ANC + this (the other white cells of an unremarkable draw), 10^9/L.
NON_NEUTROPHILS = 2.0


def _cbc(t: datetime, anc: float, lymphocytes: float = LYMPHOCYTES) -> list[dict[str, Any]]:
    iso = t.isoformat()
    values = {"wbc": round(anc + NON_NEUTROPHILS, 3), "neutrophils": round(anc, 3), "lymphocytes": lymphocytes}
    return [{"analyte": k, "value": v, "unit": "10*9/L", "time": iso} for k, v in values.items()]


def _person(pid: str, sex: str, age: float, series: list[tuple[datetime, float]], **extra: Any) -> dict[str, Any]:
    observations = [o for t, anc in series for o in _cbc(t, anc)]
    return {"patient": {"id": pid, "sex": sex, "age_years": age}, "observations": observations, **extra}


def _day(n: float) -> datetime:
    return START + timedelta(days=n)


def clozapine() -> dict[str, Any]:
    """Weekly ANC on clozapine (the label's monitoring): falls on day 42, stopped on day 46 (a
    positive dechallenge), recovered by day 56."""
    anc_by_day = {0: 4.2, 7: 4.0, 14: 4.4, 21: 3.9, 28: 4.1, 35: 3.6, 42: 1.1, 45: 0.6, 49: 0.8, 53: 1.3,
                  56: 2.4, 63: 3.5, 70: 3.9}
    return _person("demo-cloz", "male", 34, [(_day(d), a) for d, a in anc_by_day.items()],
                   medications=[{"name": "clozapine", "start": _day(0).date().isoformat(),
                                 "stop": _day(46).date().isoformat()}],
                   conditions=["schizophrenia"])


def cyclic(period: float = 21.0, weeks: int = 8, seed: int = 7) -> dict[str, Any]:
    """A 21-day neutrophil cycle (nadir below 0.2) drawn Mon/Wed/Fri at varying hours with missed
    draws and 10% noise, plus two earlier clinic visits that happened to fall on nadirs."""
    rnd = random.Random(seed)
    series: list[tuple[datetime, float]] = [(_day(-140), 0.15), (_day(-37), 0.11)]
    for week in range(weeks):
        for weekday in (0, 2, 4):
            if rnd.random() < 0.15:
                continue
            day = week * 7 + weekday
            wave = ((1 - math.cos(2 * math.pi * (day - 5) / period)) / 2) ** 2
            series.append((_day(day) + timedelta(hours=rnd.randint(0, 6)),
                           (0.08 + 3.6 * wave) * math.exp(rnd.gauss(0, 0.1))))
    return _person("demo-cyclic", "female", 9, series)


def two_years(n: int = 200, seed: int = 3) -> dict[str, Any]:
    """200 results over two years: a clozapine episode (days 300-330), four 21-day chemotherapy
    cycles from day 500 with nadirs on days 7-14, and day-to-day noise."""
    rnd = random.Random(seed)
    series = []
    for i in range(n):
        t = _day(730 * i / (n - 1)) + timedelta(hours=rnd.randint(0, 8))
        day = (t - START).days
        anc = 3.5 * math.exp(rnd.gauss(0, 0.2))
        if 300 <= day < 330:
            anc = 0.4 + (day - 300) * 0.06
        cycle_day = (day - 500) % 21
        if 500 <= day < 584 and 7 <= cycle_day < 15:
            anc = 0.3 + (cycle_day - 7) * 0.15
        series.append((t, anc))
    doses = [_day(500 + 21 * k).date().isoformat() for k in range(4)]
    return _person("demo-2y", "female", 58, series,
                   chemotherapy={"regimen": "AC (doxorubicin/cyclophosphamide)", "dose_dates": doses},
                   medications=[{"name": "clozapine", "start": _day(262).date().isoformat(),
                                 "stop": _day(305).date().isoformat()},
                                {"name": "metformin", "start": START.date().isoformat(), "stop": None}],
                   conditions=["breast cancer", "schizophrenia"])


def amoxicillin() -> dict[str, Any]:
    """A grade 4 neutropenia on amoxicillin for osteomyelitis that recovered after the stop: the
    latest draw is normal, so only the whole history tells the story."""
    anc_by_day = {0: 3.8, 7: 3.1, 14: 2.2, 21: 0.3, 24: 0.4, 28: 1.2, 35: 2.9, 49: 3.6}
    return _person("demo-amox", "female", 67, [(_day(d), a) for d, a in anc_by_day.items()],
                   medications=[{"name": "amoxicillin", "start": (START.date() - timedelta(days=3)).isoformat(),
                                 "stop": _day(22).date().isoformat()}],
                   conditions=["osteomyelitis"])


def named_patients() -> list[dict[str, Any]]:
    """Every named patient, as project JSON requests with `patient.id` set."""
    return [clozapine(), cyclic(), two_years(), amoxicillin()]

