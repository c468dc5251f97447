"""Toxicity grading (CTCAE v5.0, optionally v6.0) by one generic grader over a criteria table.

As in pharmaverse/admiral, the criteria are data (knowledge/criteria.toml) and this module only
knows how to read a row: strict inequality on the worse side, inclusive on the milder side, so a
value exactly on a cut-off gets the milder grade.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any, NamedTuple

from ..knowledge import load_table
from ..model import InputError


class Grade(NamedTuple):
    """The criteria row a value falls in, with its term and threshold as the criteria state them."""

    grade: int
    term: str
    criteria: str  # label, e.g. "CTCAE v5.0"
    threshold: str
    lln_used: bool
    label: str  # as findings quote it: the term, the grade and the threshold text of the row


@cache
def criteria_versions() -> dict[str, dict[str, Any]]:
    return load_table("criteria")["versions"]


def default_criteria() -> str:
    return load_table("criteria")["default"]


@cache
def criteria_label(version: str) -> str:
    return criteria_versions()[version]["label"]


@cache
def criteria_source(version: str) -> str:
    return criteria_versions()[version]["source"]


def check_criteria(version: str, field: str = "criteria") -> str:
    if version not in criteria_versions():
        raise InputError(field, f"unknown criteria {version!r}; choose one of: {', '.join(criteria_versions())}")
    return version


@cache
def criteria_rows(version: str, analyte: str, direction: str) -> tuple[dict[str, Any], ...]:
    """Rows for one term, worst grade first (the order the grader tries them)."""
    rows = [r for r in load_table("criteria")["rows"]
            if r["version"] == version and r["analyte"] == analyte and r["direction"] == direction]
    return tuple(sorted(rows, key=lambda r: -r["grade"]))


def _bound(spec: Any, lln: float | None, uln: float | None) -> float | None:
    if spec == "LLN":
        return lln
    if spec == "ULN":
        return uln
    return float(spec)


def _fmt(x: float) -> str:
    return f"{x:g}"


def describe_row(row: dict[str, Any], lln: float | None = None, uln: float | None = None) -> str:
    """Human form of a criteria row, e.g. 'below 2 and at least 1' or 'below the LLN and at least 3'."""
    def show(spec: Any, limit: float | None) -> str:
        if spec in ("LLN", "ULN"):
            return f"{spec} ({_fmt(limit)})" if limit is not None else str(spec)
        return _fmt(float(spec))

    if row["direction"] == "low":
        text = f"<{show(row['below'], lln)}"
        if "at_least" in row:
            text += f" and >={show(row['at_least'], lln)}"
    else:
        text = f">{show(row['above'], uln)}"
        if "at_most" in row:
            text += f" and <={show(row['at_most'], uln)}"
    return text


def row_holds(row: dict[str, Any], value: float, lln: float | None, uln: float | None) -> bool:
    if row["direction"] == "low":
        below = _bound(row["below"], lln, uln)
        if below is None or not value < below:
            return False
        at_least = row.get("at_least")
        return at_least is None or value >= float(at_least)
    above = _bound(row["above"], lln, uln)
    if above is None or not value > above:
        return False
    at_most = row.get("at_most")
    return at_most is None or value <= float(at_most)


@lru_cache(maxsize=65536)
def grade(version: str, analyte: str, direction: str, value: float,
          lln: float | None = None, uln: float | None = None) -> Grade | None:
    """The CTCAE grade of a value, or None when no row holds (or the term has no rows).

    Grade 1 needs the LLN; grades 2-4 do not, so a missing LLN can only cost grade 1. Cached: a
    pure function of its arguments, and lab values repeat (they are reported to 2-3 digits).
    """
    for row in criteria_rows(version, analyte, direction):
        if row_holds(row, value, lln, uln):
            uses_limit = row.get("below") == "LLN" or row.get("above") == "ULN"
            threshold = describe_row(row, lln, uln)
            return Grade(row["grade"], row["term"], criteria_label(version), threshold, uses_limit,
                         f"{row['term']} grade {row['grade']}: {threshold}")
    return None


def term_for(version: str, analyte: str, direction: str) -> str | None:
    rows = criteria_rows(version, analyte, direction)
    return rows[0]["term"] if rows else None


@cache
def severity_word(grade_value: int) -> str:
    return load_table("criteria")["severity_words"][str(grade_value)]
