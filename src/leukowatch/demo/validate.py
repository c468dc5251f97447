"""Compare a screen's per-person verdicts with the demo's truth: sensitivity, specificity, counts
and the mismatches to inspect.

Interface (what the population engine hands over):

    validate(truth_path, screened) -> ValidationReport

`screened` maps names to tables (pyarrow Table or pandas DataFrame). The one that matters is
`screened["flags"]`: one row per person, `patient_id` (string) plus a boolean column per finding
of `FINDINGS` (neutropenia, lymphocytopenia, chronic_neutropenia, cyclic, drug_associated,
febrile_neutropenia, pancytopenia); `leukowatch.population.screen(...)` writes exactly this as its
`flags` output. A person missing from the flags table counts as all-false (a screen may list only
persons with results); a finding column missing from it is reported as "not screened", never as
false. Without a `flags` table, `screened[<finding>]` may instead list the persons with that
finding (any table with a `patient_id` column).

`flags_from_assess(demo_dir)` computes the same flags table with the per-patient engine (the
rules behind `leukowatch assess`), one person at a time: slow, for small populations and as a
second opinion; the parity of both engines is what makes the comparison meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .scenarios import FINDINGS


@dataclass
class FindingStats:
    finding: str
    truth_positive: int
    screened_positive: int
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None


@dataclass
class Mismatch:
    patient_id: str
    scenario: str
    finding: str
    expected: bool
    screened: bool


@dataclass
class ValidationReport:
    persons: int
    stats: list[FindingStats]
    not_screened: list[str]
    mismatches: list[Mismatch] = field(default_factory=list)
    by_scenario: dict[str, dict[str, int]] = field(default_factory=dict)  # scenario -> finding -> mismatches

    def stat(self, finding: str) -> FindingStats:
        return next(s for s in self.stats if s.finding == finding)

    def to_dict(self) -> dict[str, Any]:
        return {
            "persons": self.persons,
            "findings": [{"finding": s.finding, "truth": s.truth_positive, "screened": s.screened_positive,
                          "tp": s.tp, "fp": s.fp, "fn": s.fn, "tn": s.tn, "sensitivity": s.sensitivity,
                          "specificity": s.specificity} for s in self.stats],
            "not_screened": self.not_screened,
            "mismatches": [m.__dict__ for m in self.mismatches],
            "mismatches_by_scenario": self.by_scenario,
        }

    def table(self) -> str:
        """The validation table as Markdown (what the README shows)."""
        def pct(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.1f}%"

        lines = ["| finding | truth | screened | TP | FP | FN | TN | sensitivity | specificity |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in self.stats:
            lines.append(f"| {s.finding} | {s.truth_positive} | {s.screened_positive} | {s.tp} | {s.fp} | {s.fn} | "
                         f"{s.tn} | {pct(s.sensitivity)} | {pct(s.specificity)} |")
        for f in self.not_screened:
            lines.append(f"| {f} | – | not screened | | | | | | |")
        return "\n".join(lines)


def _to_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    return pa.Table.from_pandas(table, preserve_index=False)


def _flag_sets(screened: dict[str, Any]) -> dict[str, set[str] | None]:
    """finding -> set of patient ids the screen flags (None = finding not screened)."""
    out: dict[str, set[str] | None] = {f: None for f in FINDINGS}
    if "flags" in screened:
        t = _to_arrow(screened["flags"])
        ids = [str(x) for x in t.column("patient_id").to_pylist()]
        for f in FINDINGS:
            if f in t.column_names:
                out[f] = {pid for pid, v in zip(ids, t.column(f).to_pylist(), strict=True) if v}
        return out
    for f in FINDINGS:
        if f in screened:
            out[f] = {str(x) for x in _to_arrow(screened[f]).column("patient_id").to_pylist()}
    return out


def validate(truth_path: str | Path, screened: dict[str, Any]) -> ValidationReport:
    """Sensitivity, specificity, counts and mismatches of `screened` against truth.parquet."""
    truth = pq.read_table(truth_path)
    ids = [str(x) for x in truth.column("patient_id").to_pylist()]
    scenario = truth.column("scenario").to_pylist()
    sets = _flag_sets(screened)
    stats: list[FindingStats] = []
    mismatches: list[Mismatch] = []
    by_scenario: dict[str, dict[str, int]] = {}
    not_screened = [f for f in FINDINGS if sets[f] is None]
    for f in FINDINGS:
        flagged = sets[f]
        if flagged is None:
            continue
        expected = truth.column(f).to_pylist()
        tp = fp = fn = tn = 0
        for pid, sc, exp in zip(ids, scenario, expected, strict=True):
            got = pid in flagged
            if exp and got:
                tp += 1
            elif exp:
                fn += 1
            elif got:
                fp += 1
            else:
                tn += 1
            if exp != got:
                mismatches.append(Mismatch(pid, sc, f, bool(exp), got))
                by_scenario.setdefault(sc, {}).setdefault(f, 0)
                by_scenario[sc][f] += 1
        stats.append(FindingStats(f, tp + fn, tp + fp, tp, fp, fn, tn))
    return ValidationReport(len(ids), stats, not_screened, mismatches, by_scenario)


# ------------------------------------------------------------------------------------------ per-patient engine

def _rows_by_person(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return out
    for row in pq.read_table(path).to_pylist():
        out.setdefault(str(row["patient_id"]), []).append(row)
    return out


def flags_from_assess(demo_dir: str | Path, patient_ids: list[str] | None = None) -> tuple[pa.Table, dict[str, int]]:
    """The flags table computed with the per-patient rules, plus reader counts (read/accepted/rejected).

    Rows go through `request.parse_observation` (the validation every reader uses); a row that
    fails, or repeats an accepted row exactly, is rejected. Per person: every draw is evaluated
    (`assess.evaluate_history`), findings come from `rules.findings`, chronicity from
    `rules.timeline.chronic_evidence`, episodes and cyclic suspicion from `rules.timeline`,
    febrile neutropenia from `rules.infection` with a temperature taken on the day of the draw, and
    drug association from `rules.timeline.drug_timing` (onset within the association window after
    a listed non-chemotherapy medicine started).
    """
    from ..assess import evaluate_history
    from ..model import InputError, MedicationInput, Patient, Request
    from ..request import parse_observation
    from ..rules.causes import match_medications
    from ..rules.findings import findings_from_counts
    from ..rules.grading import default_criteria
    from ..rules.infection import febrile_neutropenia
    from ..rules.ranges import profile_for
    from ..rules.timeline import LowResult, Point, chronic_evidence, cyclic_neutropenia, drug_timing, episodes

    d = Path(demo_dir)
    obs_rows = _rows_by_person(d / "observations.parquet")
    meds = _rows_by_person(d / "medications.parquet")
    temps = _rows_by_person(d / "temperatures.parquet")
    people = _rows_by_person(d / "persons.parquet")
    criteria = default_criteria()
    counts = {"read": 0, "accepted": 0, "rejected": 0}
    out: dict[str, list[Any]] = {"patient_id": [], **{f: [] for f in FINDINGS}, "neutropenia_episodes": []}
    for pid in patient_ids if patient_ids is not None else sorted(obs_rows):
        rows = obs_rows.get(pid, [])
        person = (people.get(pid) or [{}])[0]
        first = rows[0] if rows else {}
        patient = Patient(id=pid, sex=person.get("sex") or first.get("sex") or "unknown",
                          birth_date=person.get("birth_date") or first.get("birth_date"),
                          duffy_null=bool(person.get("duffy_null", first.get("duffy_null", False))))
        observations = []
        seen: set[tuple[Any, ...]] = set()
        for i, r in enumerate(rows):
            counts["read"] += 1
            key = tuple(r.get(k) for k in ("time", "analyte", "loinc", "value", "unit", "low", "high"))
            raw = {"analyte": r.get("analyte"), "code": r.get("loinc"), "value": r["value"], "unit": r.get("unit"),
                   "time": r["time"]}
            if r.get("low") is not None or r.get("high") is not None:
                raw["reference_range"] = {"low": r.get("low"), "high": r.get("high")}
            try:
                if key in seen:
                    raise InputError(f"row {i}", "exact duplicate of an earlier row")
                observations.append(parse_observation(raw, f"{pid}[{i}]", pid))
                seen.add(key)
                counts["accepted"] += 1
            except InputError:
                counts["rejected"] += 1
        out["patient_id"].append(pid)
        if not observations:
            for f in FINDINGS:
                out[f].append(False)
            out["neutropenia_episodes"].append(0)
            continue
        request = Request(patient=patient, observations=observations)
        profile = profile_for(None, patient.duffy_null)
        draws = [dr for dr in evaluate_history(request, profile) if dr.time is not None]
        codes = [{f.code for f in findings_from_counts(dr.counts, criteria)} for dr in draws]
        anc = [Point(dr.time, dr.counts["neutrophils"].value, dr.counts["neutrophils"].flag == "low")
               for dr in draws if "neutrophils" in dr.counts]
        eps = episodes("neutrophils", anc)
        lows = [LowResult(p.time, p.value) for p in anc if p.low]
        by_day = {p.time.date(): p.value for p in anc}
        febrile = any(
            febrile_neutropenia(by_day.get(_as_dt(t["time"]).date()), t["temperature_c"], False, False)[0] is not None
            for t in temps.get(pid, []))
        matched = match_medications([MedicationInput(m["name"], m["start"], m["stop"]) for m in meds.get(pid, [])])
        drug = any(not mm.chemotherapy and drug_timing(mm.generic, mm.start, mm.stop, "neutrophils", eps, anc).onset
                   in ("typical", "earlier_than_typical", "later_than_typical") for mm in matched)
        values = {
            "neutropenia": any("neutropenia" in c for c in codes),
            "lymphocytopenia": any("lymphocytopenia" in c for c in codes),
            "pancytopenia": any("pancytopenia" in c for c in codes),
            "chronic_neutropenia": chronic_evidence(lows) is not None,
            "cyclic": cyclic_neutropenia(anc).status == "suspected",
            "drug_associated": drug,
            "febrile_neutropenia": febrile,
        }
        for f in FINDINGS:
            out[f].append(values[f])
        out["neutropenia_episodes"].append(len(eps))
    return pa.table(out), counts


def _as_dt(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
