"""Flagged counts -> findings: which white-cell type is low (or high), its CTCAE grade and severity.

Each finding carries the rule that fired, the threshold with its number, and the source of both the
range and the grade, so that a clinician can check it without reading code.
"""

from __future__ import annotations

from ..knowledge import load_table
from ..model import FINDING_CODES, Count, Finding
from .grading import criteria_label, criteria_source, grade, severity_word, term_for

#: Which finding a low or high count of each analyte is (DESIGN.md finding codes).
LOW_FINDING: dict[str, str] = {
    "wbc": "leukopenia", "neutrophils": "neutropenia", "lymphocytes": "lymphocytopenia",
    "monocytes": "monocytopenia", "eosinophils": "eosinopenia", "basophils": "basopenia",
    "hemoglobin": "anemia", "platelets": "thrombocytopenia",
}
HIGH_FINDING: dict[str, str] = {
    "wbc": "leukocytosis", "neutrophils": "neutrophilia", "lymphocytes": "lymphocytosis",
    "monocytes": "monocytosis", "eosinophils": "eosinophilia", "basophils": "basophilia",
}
#: Findings without an accepted threshold: reported, never graded (clinical-reference §4).
UNGRADED: frozenset[str] = frozenset({"basopenia"})

_NAMES = {
    "wbc": "white blood cell count", "neutrophils": "absolute neutrophil count (ANC)",
    "lymphocytes": "lymphocyte count", "monocytes": "monocyte count", "eosinophils": "eosinophil count",
    "basophils": "basophil count", "hemoglobin": "hemoglobin", "platelets": "platelet count",
}


def _amount(value: float, unit: str) -> str:
    if unit == "10^9/L":
        return f"{value:g} x10^9/L ({value * 1000:,.0f}/uL)"
    return f"{value:g} {unit}"


def neutropenia_severity(anc: float, lln: float | None) -> str | None:
    """Severity word for a low ANC (severity.toml); None when the ANC is not below any row."""
    for row in load_table("severity")["neutropenia"]:
        limit = lln if row["below"] == "LLN" else float(row["below"])
        if limit is not None and anc < limit:
            return row["word"]
    return None


def _finding_for(count: Count, direction: str, code: str, criteria: str) -> Finding:
    lln = count.reference_range.low if count.reference_range else None
    uln = count.reference_range.high if count.reference_range else None
    limit = lln if direction == "low" else uln
    word = "below" if direction == "low" else "above"
    sign = "<" if direction == "low" else ">"
    threshold = f"{sign} {_amount(limit, count.unit)}" if limit is not None else "lab flag"
    rule = (f"{code}: {_NAMES.get(count.analyte, count.analyte)} {word} the "
            f"{'lower' if direction == 'low' else 'upper'} limit of the {count.range_source}")
    notes: list[str] = []
    g = None if code in UNGRADED else grade(criteria, count.analyte, direction, count.value, lln, uln)
    term = term_for(criteria, count.analyte, direction)
    citation = count.low_source if direction == "low" else count.high_source
    sources = [f"{count.range_source}: {citation}" if citation and citation != "lab reference range"
               else count.range_source]
    if g is not None:
        sources.append(criteria_source(criteria))
        if g.lln_used:
            notes.append(f"grade 1 uses the LLN from the {count.range_source}")
    elif code in UNGRADED:
        notes.append("no accepted threshold for basopenia: reported, not graded (clinical-reference §4)")
    elif term is None:
        notes.append(f"{criteria_label(criteria)} has no term for {code}; not graded")
    if code == "neutropenia":
        severity = neutropenia_severity(count.value, lln)
        sources.append(load_table("severity")["source"])
    else:
        severity = severity_word(g.grade) if g is not None else None
    if count.comparator in ("<", "<="):
        notes.append(f"reported as {count.comparator}{count.value:g}: the true value is lower, so the grade "
                     "shown is the mildest it can be")
    if count.derived and count.derivation:
        notes.append(f"derived: {count.derivation}")
    return Finding(
        code=code, analyte=count.analyte, value=round(count.value, 4), unit=count.unit,
        grade=g.grade if g else None, criteria=g.criteria if g else criteria_label(criteria),
        severity=severity, threshold=threshold + (f"; {g.term} grade {g.grade}: {g.threshold}" if g else ""),
        rule=rule, source="; ".join(sources), term=g.term if g else term, notes=notes,
    )


def range_sources(counts: dict[str, Count]) -> dict[str, str]:
    return {a: c.range_source for a, c in counts.items()}


def findings_from_counts(counts: dict[str, Count], criteria: str) -> list[Finding]:
    """Every finding the counts support, in the order of the white-cell analytes, then context."""
    findings: list[Finding] = []
    for analyte, count in counts.items():
        if count.flag == "low" and analyte in LOW_FINDING:
            findings.append(_finding_for(count, "low", LOW_FINDING[analyte], criteria))
        elif count.flag == "high" and analyte in HIGH_FINDING:
            findings.append(_finding_for(count, "high", HIGH_FINDING[analyte], criteria))
        elif analyte == "basophils" and count.value == 0:
            # A zero basophil count is reported even without a range (clinical-reference §4).
            findings.append(_finding_for(count, "low", "basopenia", criteria))
    findings.sort(key=lambda f: FINDING_CODES.index(f.code))
    if all(counts.get(a) is not None and counts[a].flag == "low" for a in ("wbc", "hemoglobin", "platelets")):
        findings.append(Finding(
            code="pancytopenia", analyte="wbc", value=round(counts["wbc"].value, 4), unit="10^9/L",
            grade=None, criteria=None, severity=None,
            threshold="low WBC, low hemoglobin and low platelets together",
            rule="pancytopenia: leukopenia, anemia and thrombocytopenia in the same draw",
            source="clinical-reference §4: pancytopenia = low WBC, low Hb and low platelets together",
        ))
    return findings
