"""The words of an assessment: a verdict line, plain patient text and terse clinician lines.

All three are built from the same findings and alerts, so the patient and the clinician are never
told different things. Patient text follows the article's plain language and never tells anyone to
stop a medicine (the article: consult a professional first).
"""

from __future__ import annotations

from .knowledge import load_table
from .model import Assessment, Count, Finding
from .numtext import PER_UL, G
from .rules.alerts import superseded_by, verdict_head
from .rules.chronic import not_chronic_text
from .rules.findings import graded_within_range, severity_ranges
from .vocabulary import analyte as analyte_words
from .vocabulary import informational, low_white, other_low, plain_words, white_high

DISCLAIMER = (
    "Decision support, not a diagnosis. leukowatch applies published thresholds to the numbers given; "
    "it cannot examine you or know your full history. Discuss the results with a healthcare professional, "
    "and make no change to a medicine without first consulting one."
)

_BOUND = {"<": "fewer than ", "<=": "at most ", ">": "more than ", ">=": "at least "}


def _grade_text(f: Finding, within: bool = False) -> str:
    """"(CTCAE v5.0 grade 3; ANC severity: moderate (0.5-1.0 ×10⁹/L))": the neutropenia severity
    words of docs/clinical-reference.md §3 carry their own label, so they never read as the CTCAE grade's.
    A grade given within the range (DAIDS' absolute cut-offs) says so: the count is not below the range."""
    if within:
        return f"{_grade_text(f)[:-1]}; within the reference range)"
    if f.code == "neutropenia" and f.severity:
        severity = f"ANC severity: {f.severity} ({severity_ranges().get(f.severity, '')})"
        return f" ({f.criteria} grade {f.grade}; {severity})" if f.grade is not None else f" ({severity})"
    if f.grade is not None:
        return f" ({f.criteria} grade {f.grade}, {f.severity})" if f.severity else f" ({f.criteria} grade {f.grade})"
    return f" ({f.severity})" if f.severity else ""


def verdict_line(a: Assessment) -> str:
    """One line a busy reader can act on: any emergency first, then what is low and how badly.

    Informational findings (eosinopenia, basopenia) never appear here; a normal count reads as such,
    without the word "low"."""
    head: list[str] = []
    for al in a.alerts:  # heads are critical alerts only: most alerts are passed over on their level
        if al.level == "critical":
            text = verdict_head(al.code, al.variant)
            if text is not None and text not in head:
                head.append(text)
    white, others = [], []  # "code (grade, severity)" of each white-cell finding, and of the others
    low, high, other = low_white(), white_high(), other_low()
    for f in a.findings:
        if f.code in low:
            white.append(f"{f.code}{_grade_text(f, graded_within_range(f, a.counts))}")
        elif f.code in other or (f.code in high and f.code != "leukocytosis"):
            others.append(f"{f.code}{_grade_text(f, graded_within_range(f, a.counts))}")
    if white:
        body = "; ".join(white)
        if a.chronicity.status == "chronic":
            body += "; chronic"
        elif a.chronicity.status == "acute":
            body += f"; {not_chronic_text()}"
        head.append(body)
    else:
        wbc = a.counts.get("wbc")
        leukocytosis = a.finding("leukocytosis")
        if wbc is not None and wbc.flag == "high":
            head.append(f"No leukopenia; WBC is high{_grade_text(leukocytosis)}" if leukocytosis
                        else "No leukopenia; WBC is high")
        elif a.counts:
            head.append(f"No leukopenia: white-cell counts are within the {a.profile} profile's ranges")
        else:
            head.append("No white-cell counts to assess")
    if others:
        head.append("also " + ", ".join(others))
    return " — ".join(head)


def _amount(f: Finding) -> str:
    return f"{_BOUND.get(f.comparator or '', '')}{PER_UL[f.value]} cells per microlitre"


def patient_lines(a: Assessment, febrile: bool = False, chemotherapy: bool = False) -> list[str]:
    """Plain words for the person: every alert's patient text first (alerts.toml), then each finding.

    Never an instruction to change a medicine, never "watch for fever" to someone with a fever, and the
    cancer care team only with active chemotherapy (the alert texts keep those rules; tested)."""
    # An alert whose patient text another fired alert already says, sooner, is left out (alerts.toml
    # patient_superseded_by): "now" is never followed by a slower "today" for the same episode.
    fired = {al.code for al in a.alerts}
    lines: list[str] = [al.patient_message for al in a.alerts
                        if al.patient_message and fired.isdisjoint(superseded_by(al.code, al.variant))]
    codes = set()
    quiet, words = informational(), plain_words()
    for f in a.findings:
        if graded_within_range(f, a.counts):  # graded by absolute cut-offs, yet not low: said as such
            lines.append(_within_text(f, a.counts[f.analyte]))
            continue
        codes.add(f.code)
        plain = words.get(f.code, f.code)
        if f.unit == "10^9/L" and f.code != "pancytopenia" and f.code not in quiet:
            lines.append(f"Your {plain}: {_amount(f)}.")
        else:
            lines.append(f"Your {plain}.")
    text = load_table("advice")["patient_text"]
    low = not low_white().isdisjoint(codes)
    if not low and a.counts:
        lines.append(text["normal_white"] if white_high().isdisjoint(codes) else text["not_below"])
    if a.chronicity.status == "chronic":
        lines.append(text["chronic"])
    if low and not febrile:
        lines.append(text["infection_watch"])
    meds = a.possible_causes.get("medications", [])
    if meds and low:
        # one placeholder: str.replace costs a sixth of str.format here (bench/assess.py)
        lines.append(text["medicine_cause"].replace("{medicines}", ", ".join([m.input for m in meds])))
    return lines


def _within_text(f: Finding, count: Count) -> str:
    """The patient words for a grade given within the range (criteria.toml [within_range])."""
    text = load_table("criteria")["within_range"]
    ranged = count.reference_range is not None and count.reference_range.low is not None
    template = text["patient"] if ranged else text["patient_no_range"]
    return (template.replace("{plain}", analyte_words(f.analyte).plain).replace("{amount}", _amount(f))
            .replace("{criteria}", f.criteria or "").replace("{grade}", str(f.grade)))


def clinician_lines(a: Assessment) -> list[str]:
    lines = [f"[{al.level.upper()}] {al.message}" for al in a.alerts]
    for f in a.findings:
        value = f"{f.comparator or ''}{G[f.value]} {f.unit}"
        if f.code in informational():
            lines.append(f"{f.code}: {value}; informational, not graded; threshold {f.threshold}")
        elif graded_within_range(f, a.counts):
            severity = f"; ANC severity {f.severity}" if f.severity else ""
            lines.append(f"{f.code}: {value}; {f.term} G{f.grade} ({f.criteria}){severity}; within the reference "
                         f"range, graded by the criteria's absolute cut-offs; threshold {f.threshold}")
        elif f.code == "neutropenia" and f.grade is not None:
            lines.append(f"{f.code}: {value}; {f.term} G{f.grade} ({f.criteria}); ANC severity {f.severity}; "
                         f"threshold {f.threshold}")
        elif f.grade is not None:
            lines.append(f"{f.code}: {value}; {f.term} G{f.grade} ({f.criteria}); threshold {f.threshold}")
        else:
            lines.append(f"{f.code}: {value}; not graded; threshold {f.threshold}")
    if a.chronicity.status != "undetermined":
        lines.append(f"chronicity: {a.chronicity.status} — {a.chronicity.evidence[0]}")
    for m in a.possible_causes.get("medications", []):
        lines.append(f"possible drug cause: {m.input} -> {m.generic} ({m.drug_class}); {m.why}")
    for m in a.possible_causes.get("not_current_medications", []):
        lines.append(f"medicine mentioned, not current: {m.input} -> {m.generic}; {m.not_current}")
    for c in a.possible_causes.get("conditions", []):
        lines.append(f"possible condition: {c.input} -> {c.name} ({c.category}, {c.course})")
    for s in a.scores:
        lines.append(f"{s.name}: {s.interpretation}" + (f" Missing: {', '.join(s.missing)}." if s.missing else ""))
    return lines
