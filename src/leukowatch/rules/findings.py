"""Flagged counts -> findings: which white-cell type is low (or high), its CTCAE grade and severity.

Each finding carries the rule that fired, the threshold with its number, and the source of both the
range and the grade, so that a clinician can check it without reading code.
"""

from __future__ import annotations

from typing import NamedTuple

from ..knowledge import derived, load_table
from ..model import FINDING_CODES, Count, Finding
from ..vocabulary import analyte as analyte_words
from .grading import criteria_label, criteria_source, grade, grades_within_range, severity_word, term_for

#: Which finding a low or high count of each analyte is (the finding codes of docs/contracts.md).
LOW_FINDING: dict[str, str] = {
    "wbc": "leukopenia", "neutrophils": "neutropenia", "lymphocytes": "lymphocytopenia",
    "monocytes": "monocytopenia", "eosinophils": "eosinopenia", "basophils": "basopenia",
    "hemoglobin": "anemia", "platelets": "thrombocytopenia",
}
HIGH_FINDING: dict[str, str] = {
    "wbc": "leukocytosis", "neutrophils": "neutrophilia", "lymphocytes": "lymphocytosis",
    "monocytes": "monocytosis", "eosinophils": "eosinophilia", "basophils": "basophilia",
}
#: Findings without an accepted threshold: reported, never graded (docs/clinical-reference.md §4).
UNGRADED: frozenset[str] = frozenset({"basopenia"})

_RANK = {code: i for i, code in enumerate(FINDING_CODES)}


def _amount(value: float, unit: str) -> str:
    if unit == "10^9/L":
        return f"{value:g} x10^9/L ({value * 1000:,.0f}/uL)"
    return f"{value:g} {unit}"


@derived
def _severity_rows() -> tuple[tuple[float | None, str], ...]:
    """severity.toml's neutropenia rows as (limit, word), worst first; a None limit is the LLN."""
    return tuple((None if row["below"] == "LLN" else float(row["below"]), row["word"])
                 for row in load_table("severity")["neutropenia"])


@derived
def severity_ranges() -> dict[str, str]:
    """Neutropenia severity word -> its ANC range as outputs label it (severity.toml `range`)."""
    out: dict[str, str] = {}
    for row in load_table("severity")["neutropenia"]:
        out.setdefault(row["word"], row["range"])
    return out


def neutropenia_severity(anc: float, lln: float | None) -> str | None:
    """Severity word for a low ANC (severity.toml); None when the ANC is not below any row."""
    for below, word in _severity_rows():
        limit = lln if below is None else below
        if limit is not None and anc < limit:
            return word
    return None


class _Wording(NamedTuple):
    """Everything a finding says that does not depend on the value itself."""

    threshold: str
    rule: str
    term: str | None
    criteria: str  # label
    source_graded: str
    source_ungraded: str
    lln_note: str
    ungraded_note: str | None


@derived(maxsize=4096)
def _wording(code: str, analyte: str, direction: str, unit: str, limit: float | None, range_source: str,
             citation: str | None, criteria: str) -> _Wording:
    """Worked out once per (finding, range, criteria): a handful per profile, where findings are many."""
    word = "below" if direction == "low" else "above"
    sign = "<" if direction == "low" else ">"
    term = term_for(criteria, analyte, direction)
    sources = [f"{range_source}: {citation}" if citation and citation != "lab reference range" else range_source]
    graded = [*sources, criteria_source(criteria)]
    if code == "neutropenia":
        sources.append(load_table("severity")["source"])
        graded.append(load_table("severity")["source"])
    if code in UNGRADED:
        ungraded_note: str | None = "no accepted threshold for basopenia: reported, not graded (docs/clinical-reference.md §4)"
    elif term is None:
        ungraded_note = f"{criteria_label(criteria)} has no term for {code}; not graded"
    else:
        ungraded_note = None
    return _Wording(
        threshold=f"{sign} {_amount(limit, unit)}" if limit is not None else "lab flag",
        rule=(f"{code}: {analyte_words(analyte).name} {word} the "
              f"{'lower' if direction == 'low' else 'upper'} limit of the {range_source}"),
        term=term, criteria=criteria_label(criteria), source_graded="; ".join(graded),
        source_ungraded="; ".join(sources), lln_note=f"grade 1 uses the LLN from the {range_source}",
        ungraded_note=ungraded_note,
    )


#: A finding's fields but its notes on the count itself: (value rounded for output, grade, criteria
#: label, severity, threshold, rule, source, term, the note on how it was graded or why not).
_Graded = tuple[float, int | None, str, str | None, str, str, str, str | None, str | None]


@derived(maxsize=16384)
def _graded(code: str, analyte: str, direction: str, unit: str, value: float, lln: float | None,
            uln: float | None, range_source: str, citation: str | None, criteria: str) -> _Graded:
    """Cached like `grading.grade`: a pure function of its arguments, and lab values repeat (they
    are reported to 2-3 digits), so one probe here replaces the wording, grade and severity lookups."""
    threshold, rule, term, criteria_name, source_graded, source_ungraded, lln_note, ungraded_note = _wording(
        code, analyte, direction, unit, lln if direction == "low" else uln, range_source, citation, criteria)
    g = None if code in UNGRADED else grade(criteria, analyte, direction, value, lln, uln)
    if code == "neutropenia":
        severity = neutropenia_severity(value, lln)
    else:
        severity = severity_word(g.grade) if g is not None else None
    if g is None:
        return (round(value, 4), None, criteria_name, severity, threshold, rule, source_ungraded, term,
                ungraded_note)
    return (round(value, 4), g.grade, g.criteria, severity, f"{threshold}; {g.label}", rule, source_graded, g.term,
            lln_note if g.lln_used else None)


@derived(maxsize=4096)
def _graded_within(code: str, analyte: str, unit: str, value: float, lln: float | None, uln: float | None,
                   range_source: str, citation: str | None, criteria: str) -> _Graded | None:
    """A count the range calls normal (or has no range for), graded by the low rows of a version whose
    cut-offs are absolute (`grading.grades_within_range`: DAIDS v2.1), or None when no row holds.

    The threshold is the criteria row alone: the count is not below the range, so no "< LLN" is shown;
    the rule and a note say it is within the range and graded by the version's own cut-offs."""
    if code in UNGRADED:
        return None
    g = grade(criteria, analyte, "low", value, lln, uln)
    if g is None:
        return None
    source = _wording(code, analyte, "low", unit, lln, range_source, citation, criteria).source_graded
    name = criteria_label(criteria)
    limit = f"from {_amount(lln, unit)}" if lln is not None else "no lower limit"
    note = f"within the {range_source} reference range ({limit}); {name} grades by absolute cut-offs"
    rule = (f"{code}: {analyte_words(analyte).name} graded by the {name} absolute cut-offs, though within the "
            f"{range_source} range")
    severity = neutropenia_severity(value, lln) if code == "neutropenia" else severity_word(g.grade)
    return (round(value, 4), g.grade, g.criteria, severity, g.label, rule, source, g.term, note)


def _finding_for(count: Count, direction: str, code: str, criteria: str) -> Finding:
    rr = count.reference_range
    low = direction == "low"
    graded = _graded(
        code, count.analyte, direction, count.unit, count.value, rr.low if rr else None, rr.high if rr else None,
        count.range_source, count.low_source if low else count.high_source, criteria)
    return _finding(count, code, graded)


def _within_finding(count: Count, criteria: str) -> Finding | None:
    """`_graded_within` as a finding (None: no row of the version holds the count)."""
    rr = count.reference_range
    graded = _graded_within(LOW_FINDING[count.analyte], count.analyte, count.unit, count.value,
                            rr.low if rr else None, rr.high if rr else None, count.range_source, count.low_source,
                            criteria)
    return None if graded is None else _finding(count, LOW_FINDING[count.analyte], graded)


def _finding(count: Count, code: str, graded: _Graded) -> Finding:
    value4, grade_no, criteria_name, severity, threshold, rule, source, term, grading_note = graded
    if count.value == 0:  # the cache holds 0.0 and -0.0 as one key; the output keeps the sign given
        value4 = count.value
    notes = [] if grading_note is None else [grading_note]
    if count.comparator is not None:
        notes.append(_bound_note(count.comparator, value4))
    if count.derived and count.derivation:
        notes.append(f"derived: {count.derivation}")
    # Positional, in Finding's field order (code, analyte, value, unit, grade, criteria, severity,
    # threshold, rule, source, term, notes): keywords cost twice as much on the per-request path.
    return Finding(code, count.analyte, value4, count.unit, grade_no, criteria_name, severity, threshold, rule,
                   source, term, notes, count.comparator)


def _bound_note(comparator: str, value: float) -> str:
    """What a reported bound means for the grade: judged as just beyond the bound, the mildest it allows."""
    side = "lower" if comparator.startswith("<") else "higher"
    return (f"reported as {comparator}{value:g}: graded as a value just {'below' if side == 'lower' else 'above'} "
            f"{value:g}" if len(comparator) == 1 else f"reported as {comparator}{value:g}: graded at {value:g}") + (
        f"; the true value may be {side}, so the grade shown is the mildest the bound allows")


def graded_within_range(f: Finding, counts: dict[str, Count]) -> bool:
    """Whether a finding is a grade a version with absolute cut-offs gave a count within its range (DAIDS
    v2.1), not a count below the range: the patient text, advice and alerts must not call such a count low."""
    count = counts.get(f.analyte)
    return (count is not None and count.flag != "low" and f.code not in UNGRADED
            and LOW_FINDING.get(f.analyte) == f.code)


def below_range_codes(findings: list[Finding], counts: dict[str, Count]) -> set[str]:
    """The codes of the findings that are counts out of their range (every finding but those
    `graded_within_range`): what advice and alerts read as low or high."""
    return {f.code for f in findings if not graded_within_range(f, counts)}


def range_sources(counts: dict[str, Count]) -> dict[str, str]:
    return {a: c.range_source for a, c in counts.items()}


def findings_from_counts(counts: dict[str, Count], criteria: str) -> list[Finding]:
    """Every finding the counts support, in the order of the white-cell analytes, then context."""
    ranked: list[tuple[int, Finding]] = []  # a code occurs at most once per draw, so ranks never tie
    within = grades_within_range(criteria)
    for analyte, count in counts.items():
        if count.flag == "low" and analyte in LOW_FINDING:
            code, direction = LOW_FINDING[analyte], "low"
        elif count.flag == "high" and analyte in HIGH_FINDING:
            code, direction = HIGH_FINDING[analyte], "high"
        elif analyte == "basophils" and count.value == 0:
            # A zero basophil count is reported even without a range (docs/clinical-reference.md §4).
            code, direction = "basopenia", "low"
        elif within and count.flag == "normal" and analyte in LOW_FINDING:
            # DAIDS has no LLN: its low rows grade a count the range calls normal (never one flagged high)
            found = _within_finding(count, criteria)
            if found is not None:
                ranked.append((_RANK[found.code], found))
            continue
        else:
            continue
        ranked.append((_RANK[code], _finding_for(count, direction, code, criteria)))
    ranked.sort()
    findings = [f for _, f in ranked]
    wbc, hemoglobin, platelets = counts.get("wbc"), counts.get("hemoglobin"), counts.get("platelets")
    if (wbc is not None and hemoglobin is not None and platelets is not None
            and wbc.flag == hemoglobin.flag == platelets.flag == "low"):
        findings.append(Finding(
            code="pancytopenia", analyte="wbc", value=round(wbc.value, 4), unit="10^9/L",
            grade=None, criteria=None, severity=None,
            threshold="low WBC, low hemoglobin and low platelets together",
            rule="pancytopenia: leukopenia, anemia and thrombocytopenia in the same draw",
            source="docs/clinical-reference.md §4: pancytopenia = low WBC, low Hb and low platelets together",
        ))
    return findings
