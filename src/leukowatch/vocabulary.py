"""The words for analytes and findings, from knowledge/vocabulary.toml: one table that the narrative,
every renderer, the service, the CDS cards and the CLI read, so no two outputs name a count or a
finding differently, and "low white cells" is one set everywhere.
"""

from __future__ import annotations

from typing import NamedTuple

from .knowledge import derived, load_table


class AnalyteWords(NamedTuple):
    """How outputs name one analyte: column label, clinician name, patient words, short tag, unit."""

    analyte: str
    label: str
    name: str
    plain: str
    short: str
    unit: str


class FindingWords(NamedTuple):
    """One finding code: which count, which way, which lineage, and its words."""

    code: str
    analyte: str
    direction: str
    lineage: str
    label: str
    name: str
    plain: str
    informational: bool
    graded: bool


@derived
def analytes() -> dict[str, AnalyteWords]:
    """Every analyte of the vocabulary, by name."""
    return {a: AnalyteWords(a, v["label"], v["name"], v["plain"], v.get("short", v["label"]), v["unit"])
            for a, v in load_table("vocabulary")["analytes"].items()}


@derived
def findings() -> dict[str, FindingWords]:
    """Every finding code of the vocabulary, in table order."""
    return {code: FindingWords(code, v["analyte"], v["direction"], v["lineage"], v["label"], v["name"], v["plain"],
                               v.get("informational", False), v.get("graded", True))
            for code, v in load_table("vocabulary")["findings"].items()}


def analyte(name: str) -> AnalyteWords:
    """The words for an analyte; one the table does not know is named by itself."""
    return analytes().get(name) or AnalyteWords(name, name, name, name, name, "")


def finding(code: str) -> FindingWords:
    """The words for a finding code; one the table does not know is named by its code."""
    return findings().get(code) or FindingWords(code, "", "", "", code, code, code, False, True)


@derived
def low_white() -> frozenset[str]:
    """Findings that make a count "low white cells" (advice, verdict, cards): white lineage, low, and
    not informational (eosinopenia and basopenia are reported, never a reason to act)."""
    return frozenset(f.code for f in findings().values()
                     if f.lineage == "white" and f.direction == "low" and not f.informational)


@derived
def low_any() -> frozenset[str]:
    """Findings that make any count low (white, red, platelets), informational ones left out."""
    return frozenset(f.code for f in findings().values() if f.direction == "low" and not f.informational)


@derived
def other_low() -> frozenset[str]:
    """Low findings of the other lineages (red cells, platelets, all three together)."""
    return frozenset(f.code for f in findings().values() if f.lineage != "white" and f.direction == "low")


@derived
def plain_words() -> dict[str, str]:
    """Finding code -> the patient's words for it (one lookup per finding in the patient summary)."""
    return {code: f.plain for code, f in findings().items()}


@derived
def white_high() -> frozenset[str]:
    """Findings of a high white-cell count."""
    return frozenset(f.code for f in findings().values() if f.lineage == "white" and f.direction == "high")


@derived
def informational() -> frozenset[str]:
    """Reported but never in the verdict and never a reason for advice (docs/clinical-reference.md §4, §11)."""
    return frozenset(f.code for f in findings().values() if f.informational)
