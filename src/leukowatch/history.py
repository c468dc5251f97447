"""A person's whole history -> one verdict: episodes, chronic or acute, cyclic, chemotherapy, drugs.

`assess` answers "what does today's count mean"; this module answers "what has been happening".
It re-uses the same per-draw evaluation (`assess.evaluate_history` -> `rules.counts.evaluate_draw`),
so a result is low here exactly when it is low in a single assessment, and only adds the time-course
rules of `rules.timeline`, which the population engine reproduces relationally.

The output is a `History` dataclass; `to_dict()` is what `leukowatch history --json` prints and what
the printable report (render/report.py) draws from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from .assess import chronicity_from_draws, prepare
from .knowledge import Knowledge, active
from .model import Chronicity, MedicationInput, Patient, Request, jsonable
from .rules.causes import match_medications
from .rules.chronic import not_chronic_text
from .rules.findings import LOW_FINDING
from .rules.grading import criteria_at, criteria_label, grade
from .rules.timeline import (
    ChemoNadirPattern,
    CyclicSuspicion,
    DrugTiming,
    Episode,
    LowResult,
    Point,
    chemotherapy_nadir,
    chronicity,
    cyclic_neutropenia,
    drug_timing,
    episodes,
)
from .vocabulary import analyte as analyte_words

#: Analytes whose history is followed (the white cells, then the context counts of the same CBC).
HISTORY_ANALYTES: tuple[str, ...] = (
    "wbc", "neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils", "hemoglobin", "platelets",
)
#: The analyte the cyclic, chemotherapy and drug rules follow: the ANC when measured, else the WBC.
_DRIVER_ORDER: tuple[str, ...] = ("neutrophils", "wbc")


@dataclass(frozen=True)
class SeriesPoint:
    """One result in a person's series, as judged at its draw (flag against that draw's range)."""

    time: datetime
    value: float
    flag: str
    grade: int | None
    ref_low: float | None
    ref_high: float | None

    @property
    def low(self) -> bool:
        return self.flag == "low"


@dataclass
class History:
    patient: Patient
    profile: str
    criteria: str  # label, e.g. "CTCAE v5.0"
    criteria_version: str  # key into criteria.toml, e.g. "ctcae-v5"
    n_draws: int
    first: datetime | None
    last: datetime | None
    series: dict[str, list[SeriesPoint]]
    episodes: dict[str, list[Episode]]  # finding code -> episodes
    chronicity: Chronicity  # the headline verdict, as `assess` gives it for the latest draw
    chronicity_by_analyte: dict[str, Chronicity]
    driver: str | None  # analyte followed by the cyclic, chemotherapy and drug rules
    cyclic: CyclicSuspicion | None
    chemotherapy: ChemoNadirPattern | None
    drug_timing: list[DrugTiming]
    medications: list[MedicationInput]
    medication_links: dict[str, str]  # input name -> "generic (class)" when the drug table lists it
    chemotherapy_doses: list[date]
    verdict: list[str] = field(default_factory=list)
    knowledge_version: str = ""  # the Knowledge that judged it (bundled tables plus any site overlay)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape of `leukowatch history --json` (the series are left out; the report draws them)."""
        out = jsonable(self)
        out.pop("series")
        out["patient"] = {"id": self.patient.id, "sex": self.patient.sex, "duffy_null": self.patient.duffy_null}
        for code, eps in self.episodes.items():
            for d, e in zip(out["episodes"][code], eps, strict=True):
                d["duration_days"] = e.duration_days
        if out.get("cyclic"):
            out["cyclic"]["nadirs"] = [{"time": t, "value": v} for t, v in out["cyclic"]["nadirs"]]
        return out


def _series(draws: list, analyte: str, criteria: str, patient: Patient) -> list[SeriesPoint]:
    out = []
    for d in draws:
        c = d.counts.get(analyte)
        if c is None or d.time is None:
            continue
        rr = c.reference_range
        lln, uln = (rr.low, rr.high) if rr else (None, None)
        # each draw at its own age: DAIDS bands a newborn's first week by days
        at = criteria_at(criteria, patient.birth_date, patient.age_years, d.time)
        g = grade(at, analyte, "low", c.value, lln, uln) if c.flag == "low" else None
        out.append(SeriesPoint(d.time, c.value, c.flag, g.grade if g else None, lln, uln))
    return out


def _points(series: list[SeriesPoint]) -> list[Point]:
    return [Point(p.time, p.value, p.low, p.grade) for p in series]


def _chronicity(analyte: str, series: list[SeriesPoint]) -> Chronicity:
    """Per-analyte chronicity over the whole history (the same rule as the single request)."""
    lows = [LowResult(p.time, p.value) for p in series if p.low]
    return chronicity(analyte, lows, len(series), bool(series) and series[-1].low)


def _dose_dates(request: Request) -> list[date]:
    doses = set(request.chemotherapy.dose_dates)
    if request.chemotherapy.last_dose is not None:
        doses.add(request.chemotherapy.last_dose)
    return sorted(doses)


def build_history(request: Request | dict[str, Any], knowledge: Knowledge | None = None) -> History:
    """The history verdict for one person's request (every timed observation is part of the history),
    judged with `knowledge` (default: the active one)."""
    request, profile, criteria, draws = prepare(request, knowledge)
    timed = [d for d in draws if d.time is not None]
    series = {a: s for a in HISTORY_ANALYTES if (s := _series(draws, a, criteria, request.patient))}
    eps = {LOW_FINDING[a]: found for a, s in series.items() if (found := episodes(a, _points(s)))}
    by_analyte = {a: _chronicity(a, s) for a, s in series.items() if any(p.low for p in s)}
    driver = next((a for a in _DRIVER_ORDER if a in series), None)
    cyclic = chemo = None
    timing: list[DrugTiming] = []
    doses = _dose_dates(request)
    if driver is not None:
        pts = _points(series[driver])
        driver_eps = episodes(driver, pts)
        chemo = chemotherapy_nadir(doses, pts, driver)
        cyclic = cyclic_neutropenia(pts, driver)
        if cyclic.status == "suspected" and chemo.status == "consistent":
            cyclic = replace(cyclic, status="not_suspected", evidence=[
                *cyclic.evidence, "the rhythm follows the chemotherapy doses (nadir pattern consistent), so it "
                "is read as chemotherapy-induced, not cyclic neutropenia"])
    matches = match_medications(request.medications)
    links = {m.input: f"{m.generic} ({m.drug_class})" for m in matches}
    cytotoxic = {m.input for m in matches if m.chemotherapy}
    if driver is not None:
        # Chemotherapy is judged by its nadir pattern, not by the agranulocytosis onset window.
        timing = [drug_timing(m.name, m.start, m.stop, driver, driver_eps, pts)
                  for m in request.medications if m.name not in cytotoxic]
    history = History(
        patient=request.patient, profile=profile, criteria=criteria_label(criteria), criteria_version=criteria,
        n_draws=len(timed),
        first=timed[0].time if timed else None, last=timed[-1].time if timed else None, series=series,
        episodes=eps, chronicity=chronicity_from_draws(draws), chronicity_by_analyte=by_analyte, driver=driver,
        cyclic=cyclic, chemotherapy=chemo, drug_timing=timing, medications=request.medications,
        medication_links=links, chemotherapy_doses=doses, knowledge_version=active().version,
    )
    history.verdict = verdict_lines(history)
    return history


def _amount(analyte: str, value: float) -> str:
    if analyte in ("hemoglobin",):
        return f"{value:g} g/dL"
    return f"{value:.2f} x10^9/L ({value * 1000:,.0f} cells/µL)"


def verdict_lines(h: History) -> list[str]:
    """Plain-language lines, most important first: what was low, for how long, and possible patterns."""
    lines: list[str] = []
    if h.n_draws == 0:
        return ["No dated results: a history needs results with dates."]
    span = (h.last - h.first).days if h.first and h.last else 0
    lines.append(f"{h.n_draws} blood counts over {span} days ({h.first.date().isoformat()} to "
                 f"{h.last.date().isoformat()}), judged against the {h.profile} profile.")
    white = [a for a in ("wbc", "neutrophils", "lymphocytes") if LOW_FINDING[a] in h.episodes]
    if not white:
        lines.append(f"No low white-cell counts in this history (against the {h.profile} profile).")
    for a in white:
        eps = h.episodes[LOW_FINDING[a]]
        worst = min(eps, key=lambda e: e.nadir_value)
        grades = [e.worst_grade for e in eps if e.worst_grade is not None]
        g = f", CTCAE grade {max(grades)} at worst" if grades else ""
        ongoing = " It is still low at the latest result." if eps[-1].recovery is None else ""
        lines.append(f"Your {analyte_words(a).plain} was low in {len(eps)} episode(s); the lowest was "
                     f"{_amount(a, worst.nadir_value)} on {worst.nadir_time.date().isoformat()}{g}.{ongoing}")
        c = h.chronicity_by_analyte.get(a)
        if c is not None and c.status == "chronic":
            lines.append(f"Chronic: {c.evidence[0].split(' (')[0]}. Doctors call a count chronic when it is low on at least "
                         "three occasions over three months.")
    if h.chronicity.status == "acute":
        lines.append(f"The low results are {not_chronic_text()}: the latest low result does not (yet) meet it.")
    if h.cyclic is not None and h.cyclic.status == "suspected":
        lines.append(f"Possible cyclic neutropenia: low counts recur about every {h.cyclic.period_days:.0f} days "
                     f"({len(h.cyclic.nadirs)} nadirs). A haematologist can confirm it.")
    if h.chemotherapy is not None and h.chemotherapy.status == "consistent":
        lines.append("The falls follow the usual chemotherapy pattern: " + h.chemotherapy.evidence[0] + ".")
    elif h.chemotherapy is not None and h.chemotherapy.status == "not_consistent":
        lines.append("The counts do not follow the usual chemotherapy pattern: " + h.chemotherapy.evidence[0]
                     + "; worth discussing with the care team.")
    for t in h.drug_timing:
        if t.onset not in ("none", "no_start"):
            lines.append("For your clinician: " + t.hint)
    return lines
