"""What a patient page says first, and the plain text a clinician pastes into the note.

A patient's page used to judge only the latest draw, so a person who had a grade 4 neutropenia on
amoxicillin a month ago read "No leukopenia". The banner here summarises the whole history: the
state at the latest draw (with its date), the worst episode with its dates, and the chronic, cyclic,
chemotherapy and drug-timing hints of `leukowatch.history`. `note_text` is the same content as plain
text (MDCalc's "copy to note"): no markup, one unit notation, sources named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..history import History
from ..model import Assessment
from ..vocabulary import analyte, finding
from .display import clean_source, readable_units


def _day(t: datetime | None) -> str:
    return t.date().isoformat() if t else "–"


@dataclass
class Headline:
    """The banner of a patient page: now, the worst episode, and the patterns over time."""

    latest: str  # "Latest draw 2026-02-23: No leukopenia ..."
    worst: str | None  # the worst episode, with its dates
    hints: list[str] = field(default_factory=list)  # chronic, cyclic, chemotherapy, drug timing
    episodes: int = 0


def _worst_episode(h: History) -> str | None:
    ranked = [(e.worst_grade if e.worst_grade is not None else -1, -e.nadir_value, code, e)
              for code, eps in h.episodes.items() for e in eps]
    if not ranked:
        return None
    grade, _, code, e = max(ranked, key=lambda r: (r[0], r[1]))
    unit = analyte(e.analyte).unit or "×10⁹/L"
    graded = f"{h.criteria} grade {grade}, " if grade >= 0 else ""
    until = f"recovered {_day(e.recovery)}" if e.recovery else "not yet recovered"
    return (f"Worst episode: {finding(code).name}, {graded}lowest {e.nadir_value:.2f} {unit} on "
            f"{_day(e.nadir_time)}; low from {_day(e.onset)}, {until} ({e.n_low} low result(s)).")


def headline(h: History, a: Assessment) -> Headline:
    """The banner for a stored patient: the latest draw, the worst episode and the history's hints."""
    latest = f"Latest draw {_day(h.last)}: {a.verdict}" if h.last else a.verdict
    hints = [f"Chronic {analyte}: {c.evidence[0]}" for analyte, c in h.chronicity_by_analyte.items()
             if c.status == "chronic" and c.evidence]
    if h.cyclic is not None and h.cyclic.status == "suspected" and h.cyclic.period_days is not None:
        hints.append(f"Cyclic neutropenia suspected: nadirs about every {h.cyclic.period_days:.0f} days "
                     f"({len(h.cyclic.nadirs)} nadirs).")
    if h.chemotherapy is not None and h.chemotherapy.status in ("consistent", "not_consistent"):
        hints.append(f"Chemotherapy nadir pattern {h.chemotherapy.status.replace('_', ' ')}: "
                     f"{h.chemotherapy.evidence[0]}.")
    hints += [t.hint for t in h.drug_timing if t.onset not in ("none", "no_start")]
    return Headline(readable_units(latest), _worst_episode(h), [readable_units(x) for x in hints],
                    sum(len(e) for e in h.episodes.values()))


def note_text(a: Assessment, h: History | None = None, who: str = "") -> str:
    """A plain-text summary for the clinical note: verdict, history, counts, findings with sources."""
    lines = [f"leukowatch{' — ' + who if who else ''} (decision support, not a diagnosis)"]
    if h is not None and h.n_draws > 1:
        hl = headline(h, a)
        lines += [hl.latest] + ([hl.worst] if hl.worst else []) + hl.hints
    else:
        lines.append(f"Verdict: {a.verdict}")
    lines += [f"{al.level.upper()}: {al.message}" for al in a.alerts]
    counts = [f"{name} {c.comparator or ''}{c.value:g} {c.unit}{' (derived)' if c.derived else ''}"
              f"{'' if c.flag == 'normal' else ' ' + c.flag.upper()}" for name, c in a.counts.items()]
    if counts:
        lines.append("Counts: " + "; ".join(counts))
    for f in a.findings:
        grade = f" {f.criteria} grade {f.grade}" if f.grade is not None else ""
        lines.append(f"- {f.code}{grade}: {f.value:g} {f.unit}, threshold {f.threshold} "
                     f"(source: {clean_source(f.source)})")
    meds = a.possible_causes.get("medications", [])
    if meds:
        lines.append("Possible drug causes: " + "; ".join(f"{m.input} ({m.drug_class})" for m in meds))
    lines.append(f"Profile {a.profile}, {a.criteria}, knowledge {a.knowledge_version}.")
    return readable_units("\n".join(lines))
