"""Dated histories for the history and report tests (issue 4 scenarios), as project JSON requests.

Each builder returns the request dict a user (or `store.load_patient_request`) would produce, so the
tests exercise parsing, per-draw evaluation and the timeline rules together.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def draw(t: datetime, anc: float, wbc: float | None = None, lymph: float | None = None) -> list[dict[str, Any]]:
    """One CBC at time t: ANC, WBC (default ANC + 2.0) and lymphocytes (default 1.6), in 10^9/L."""
    wbc = round(anc + 2.0, 3) if wbc is None else wbc
    lymph = 1.6 if lymph is None else lymph
    iso = t.isoformat()
    return [{"analyte": "wbc", "value": wbc, "unit": "10*9/L", "time": iso},
            {"analyte": "neutrophils", "value": round(anc, 3), "unit": "10*9/L", "time": iso},
            {"analyte": "lymphocytes", "value": lymph, "unit": "10*9/L", "time": iso}]


def request(draws: list[list[dict[str, Any]]], **extra: Any) -> dict[str, Any]:
    patient = {"id": "h1", "sex": "female", "age_years": 54, **extra.pop("patient", {})}
    return {"patient": patient, "observations": [o for d in draws for o in d], **extra}


def chemotherapy_cycles(n_cycles: int = 4) -> dict[str, Any]:
    """21-day cycles; ANC falls to a nadir on day 10 (grade 4), recovers by day 17-21."""
    profile = {0: 3.6, 3: 3.1, 7: 1.3, 10: 0.35, 14: 0.9, 17: 1.9}
    start = date(2026, 2, 2)
    doses = [start + timedelta(days=21 * i) for i in range(n_cycles)]
    draws = []
    for d in doses:
        for day, anc in profile.items():
            draws.append(draw(datetime(d.year, d.month, d.day, 8, tzinfo=UTC) + timedelta(days=day), anc))
    end = doses[-1] + timedelta(days=21)
    draws.append(draw(datetime(end.year, end.month, end.day, 8, tzinfo=UTC), 3.4))
    return request(draws, chemotherapy={"regimen": "AC", "dose_dates": [d.isoformat() for d in doses]},
                   medications=[{"name": "doxorubicin", "start": doses[0].isoformat(), "stop": None}])


CLOZAPINE_START = date(2026, 1, 5)
CLOZAPINE_STOP = CLOZAPINE_START + timedelta(days=46)


def clozapine() -> dict[str, Any]:
    """Weekly ANC while on clozapine; falls on day 42, stopped day 46, recovered on day 56."""
    series = {0: 4.2, 7: 4.0, 14: 4.4, 21: 3.9, 28: 4.1, 35: 3.6, 42: 1.1, 45: 0.6, 49: 0.8, 53: 1.3,
              56: 2.4, 63: 3.5, 70: 3.9}
    draws = [draw(T0 + timedelta(days=d), anc) for d, anc in series.items()]
    return request(draws, medications=[
        {"name": "clozapine", "start": CLOZAPINE_START.isoformat(), "stop": CLOZAPINE_STOP.isoformat()}])


def cyclic(period: float = 21.0, weeks: int = 8, seed: int = 7) -> dict[str, Any]:
    """A cyclic-neutropenia ANC (nadir < 0.2 every `period` days), drawn Mon/Wed/Fri at varying hours,
    with some draws missed and 10% multiplicative noise."""
    rnd = random.Random(seed)
    draws = []
    for week in range(weeks):
        for dow in (0, 2, 4):
            if rnd.random() < 0.15:
                continue
            day = week * 7 + dow
            t = T0 + timedelta(days=day, hours=rnd.randint(0, 6))
            phase = 2 * math.pi * (day - 5) / period
            anc = (0.08 + 3.6 * ((1 - math.cos(phase)) / 2) ** 2) * math.exp(rnd.gauss(0, 0.1))
            draws.append(draw(t, anc, wbc=round(anc + 2.4, 3)))
    return request(draws)


def steady(anc: float, months: int = 6, duffy_null: bool = True) -> dict[str, Any]:
    """A steady ANC every 4 weeks (the Duffy-null scenario: 1.3 is normal for DANC)."""
    draws = [draw(T0 + timedelta(weeks=4 * i), anc, wbc=3.6, lymph=1.8) for i in range(months)]
    return request(draws, patient={"duffy_null": duffy_null})


def lows_at(weeks: list[int], low_anc: float = 1.1, normal_weeks: list[int] | None = None) -> dict[str, Any]:
    """Low ANC at the given weeks, normal (3.5) at the others listed."""
    points = {w: low_anc for w in weeks} | {w: 3.5 for w in (normal_weeks or [])}
    draws = [draw(T0 + timedelta(weeks=w), anc, wbc=max(anc + 3.0, 4.0)) for w, anc in sorted(points.items())]
    return request(draws)


def two_years(n: int = 200, seed: int = 3) -> dict[str, Any]:
    """200 results over two years: a clozapine episode, a chemotherapy course and noise."""
    rnd = random.Random(seed)
    draws = []
    for i in range(n):
        t = T0 + timedelta(days=730 * i / (n - 1), hours=rnd.randint(0, 8))
        day = (t - T0).days
        anc = 3.5 * math.exp(rnd.gauss(0, 0.2))
        if 300 <= day < 330:
            anc = 0.4 + (day - 300) * 0.06
        if 500 <= day < 584 and (day - 500) % 21 in range(7, 15):
            anc = 0.3 + ((day - 500) % 21 - 7) * 0.15
        draws.append(draw(t, anc, lymph=round(1.5 * math.exp(rnd.gauss(0, 0.25)), 3)))
    doses = [(T0 + timedelta(days=500 + 21 * k)).date().isoformat() for k in range(4)]
    return request(draws, chemotherapy={"regimen": "AC", "dose_dates": doses},
                   medications=[{"name": "clozapine", "start": (T0 + timedelta(days=262)).date().isoformat(),
                                 "stop": (T0 + timedelta(days=305)).date().isoformat()},
                                {"name": "metformin", "start": T0.date().isoformat(), "stop": None}])
