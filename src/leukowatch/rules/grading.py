"""Toxicity grading (CTCAE v5.0, v6.0, DAIDS v2.1) by one generic grader over a criteria table.

As in pharmaverse/admiral, the criteria are data (knowledge/criteria.toml) and this module only
knows how to read a row: strict inequality on the worse side, inclusive on the milder side, so a
value exactly on a cut-off gets the milder grade (a row marked `inclusive` also keeps its own upper
cut-off, as DAIDS ANC grade 1 does).

DAIDS is age-banded (age in days from the birth date to the result; completed years for the
lymphocyte table). Rather than threading an age through every caller, `criteria_for_age` turns a
version into a *criteria key* that names the age as well ("daids-v2.1@8d6y:birth_date"); every
function here accepts either. The key clamps the age to the oldest band so that adults share one
key (and one cache entry), and it carries how the age was known, which the label and source say.
A bare age-banded version means an adult, as everywhere else when the age is not given.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from ..knowledge import derived, load_table
from ..model import InputError


class Grade(NamedTuple):
    """The criteria row a value falls in, with its term and threshold as the criteria state them."""

    grade: int
    term: str
    criteria: str  # label, e.g. "CTCAE v5.0"
    threshold: str
    lln_used: bool
    label: str  # as findings quote it: the term, the grade and the threshold text of the row


@derived
def criteria_versions() -> dict[str, dict[str, Any]]:
    """Version name -> its label and source: the names `--criteria` and `"criteria"` accept."""
    return load_table("criteria")["versions"]


def default_criteria() -> str:
    """The version used when a request names none (CTCAE v5.0, the reference implementation's)."""
    return load_table("criteria")["default"]


#: How a criteria key's age was known (the part after ":"), as the label and the source say it.
_BASIS_NOTE = {
    "birth_date": "age from birth_date to the result date",
    "age_years": "age from age_years, no birth_date",
    "adult": "age not given: adult bands",
    "days_unknown": "no birth_date: the ANC and WBC bands need the age in days",
    "no_time": "result without a time: the age at the result is unknown",
}
#: Bases whose assumption the label itself states (the others are stated in the source only).
_BASIS_IN_LABEL = frozenset({"adult", "days_unknown", "no_time"})


class CriteriaKey(NamedTuple):
    """A criteria version with the age its age-banded rows are chosen by (None: not known)."""

    version: str
    age_days: int | None
    age_years: int | None
    basis: str | None


@derived
def parse_key(key: str) -> CriteriaKey:
    """'daids-v2.1@8d6y:birth_date' -> its parts; a bare version is itself (an adult if age-banded)."""
    if "@" not in key:
        if age_banded(key):
            return CriteriaKey(key, *age_caps(key), "adult")
        return CriteriaKey(key, None, None, None)
    version, rest = key.split("@", 1)
    ages, basis = rest.split(":", 1)
    days, years = ages.rstrip("y").split("d")
    return CriteriaKey(version, None if days == "?" else int(days), None if years == "?" else int(years), basis)


def _version(key: str) -> str:
    return key.split("@", 1)[0]


@derived
def criteria_label(key: str) -> str:
    """The version's label; for an age-banded key whose age had to be assumed, the assumption too."""
    k = parse_key(key)
    label = criteria_versions()[k.version]["label"]
    if "@" in key and k.basis in _BASIS_IN_LABEL:
        return f"{label} ({_BASIS_NOTE[k.basis]})"
    return label


@derived
def criteria_source(key: str) -> str:
    """The version's source; for an age-banded key, which age chose the rows and how it was known."""
    k = parse_key(key)
    source = criteria_versions()[k.version]["source"]
    if k.basis is None:
        return source
    return f"{source}; {_age_text(k)} ({_BASIS_NOTE[k.basis]})"


def _age_text(k: CriteriaKey) -> str:
    day_cap, year_cap = age_caps(k.version)
    parts = []
    if k.age_days is None:
        parts.append("age in days unknown")
    elif day_cap is not None and k.age_days < day_cap:
        parts.append(f"age {k.age_days} day{'s' if k.age_days != 1 else ''}")
    else:
        parts.append(f"age > {day_cap - 1 if day_cap else 0} days")
    if year_cap is not None:
        if k.age_years is None or k.age_years < year_cap:
            parts.append(f"{k.age_years if k.age_years is not None else 'unknown'} completed years")
        else:
            parts.append(f"> {year_cap - 1} years")
    return ", ".join(parts)


@derived
def grades_within_range(key: str) -> bool:
    """Whether the version's low rows also grade a count its reference range calls normal (criteria.toml
    `grades_within_range`): DAIDS v2.1's cut-offs are absolute, with no LLN, so a newborn's ANC of 4.5 is
    DAIDS grade 1 though the paediatric range starts at 1.0. CTCAE keeps grading only counts below the range."""
    return bool(criteria_versions()[parse_key(key).version].get("grades_within_range", False))


def check_criteria(version: Any, field: str = "criteria") -> str:
    """A version name as a user gives it (a criteria key is built from it, never accepted from outside)."""
    if not isinstance(version, str) or version not in criteria_versions():
        raise InputError(field, f"unknown criteria {version!r}; choose one of: {', '.join(criteria_versions())}")
    return version


@derived
def criteria_table(version: str) -> tuple[dict[str, Any], ...]:
    """Every row of one version as the table states it, age bands included (what a relational
    grader joins against: it picks the band per person itself)."""
    return tuple(r for r in load_table("criteria")["rows"] if r["version"] == version)


_AGE_KEYS = ("min_age_days", "max_age_days", "min_age_years")
DAYS_PER_YEAR = 365.25  # a stated age in years, as days (Patient.age_at's inverse)


@derived
def age_banded(version: str) -> bool:
    """Whether any row of the version depends on age (then `criteria_for_age` names the age)."""
    return any(k in r for r in criteria_table(_version(version)) for k in _AGE_KEYS)


@derived
def age_caps(version: str) -> tuple[int | None, int | None]:
    """One past the last age any band of the version tells apart, in days and in completed years:
    older ages choose the same rows, so they share one key."""
    rows = criteria_table(version)
    day_edges = [r["min_age_days"] for r in rows if "min_age_days" in r]
    day_edges += [r["max_age_days"] + 1 for r in rows if "max_age_days" in r]
    years = [r["min_age_years"] for r in rows if "min_age_years" in r]
    return (max(day_edges) if day_edges else None), (max(years) if years else None)


def row_applies(row: dict[str, Any], age_days: int | None, age_years: int | None) -> bool:
    """Whether a row's age band holds the age (a row without age keys holds every age; an unknown
    age is in no band)."""
    if "min_age_days" in row or "max_age_days" in row:
        if age_days is None or age_days < row.get("min_age_days", 0):
            return False
        if "max_age_days" in row and age_days > row["max_age_days"]:
            return False
    if "min_age_years" in row:
        return age_years is not None and age_years >= row["min_age_years"]
    return True


def completed_years(birth: date, on: date) -> int:
    """Whole years from `birth` to `on` (a birthday counts on the day itself; 29 February on 1 March)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def criteria_for_age(version: str, birth_date: date | None, age_years: float | None,
                     when: datetime | date | None) -> str:
    """The criteria key for one person's result: the version itself unless it is age-banded.

    Age in days from the birth date to the result date (admiral's compute_duration in days,
    birth 1 July to result 2 July = 1 day); completed years likewise. Without a birth date a stated
    age past the last band in days (DAIDS: 8 days) is taken as past it; a younger or zero age
    ("0 years") leaves the days unknown and the rows in days do not apply: DAIDS needs the age in
    days up to 7 days, and the label says so. No age at all: adult, as the ranges assume. A birth
    date with a result that has no time gives no age at the result: no age-banded row applies.
    """
    if not age_banded(version):
        return version
    day_cap, year_cap = age_caps(version)
    on = when.date() if isinstance(when, datetime) else when
    if birth_date is not None and on is not None:
        days: int | None = (on - birth_date).days
        years: int | None = completed_years(birth_date, on)
        basis = "birth_date"
    elif age_years is not None:
        years = int(age_years)
        days = day_cap if day_cap is not None and age_years * DAYS_PER_YEAR >= day_cap else None
        basis = "age_years" if days is not None or day_cap is None else "days_unknown"
    elif birth_date is not None:
        days, years, basis = None, None, "no_time"
    else:
        days, years, basis = day_cap, year_cap, "adult"
    if days is not None and day_cap is not None:
        days = min(days, day_cap)
    if years is not None and year_cap is not None:
        years = min(years, year_cap)
    return f"{version}@{'?' if days is None else days}d{'?' if years is None else years}y:{basis}"


def criteria_at(key: str, birth_date: date | None, age_years: float | None, when: datetime | date | None) -> str:
    """The same criteria re-read at another result's time: an age-banded key names one age, and a
    newborn's draws a few days apart can fall in different bands (history grades each draw so)."""
    return criteria_for_age(parse_key(key).version, birth_date, age_years, when)


@derived
def criteria_rows(key: str, analyte: str, direction: str) -> tuple[dict[str, Any], ...]:
    """Rows for one term that apply at the key's age, worst grade first (the order the grader tries them)."""
    k = parse_key(key)
    rows = [r for r in criteria_table(k.version) if r["analyte"] == analyte and r["direction"] == direction
            and row_applies(r, k.age_days, k.age_years)]
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
        text = f"{'<=' if row.get('inclusive') else '<'}{show(row['below'], lln)}"
        if "at_least" in row:
            text += f" and >={show(row['at_least'], lln)}"
    else:
        text = f">{show(row['above'], uln)}"
        if "at_most" in row:
            text += f" and <={show(row['at_most'], uln)}"
    return text


def row_holds(row: dict[str, Any], value: float, lln: float | None, uln: float | None) -> bool:
    """Whether a value lies in a row's interval (the row's age band is chosen before, by the key)."""
    if row["direction"] == "low":
        below = _bound(row["below"], lln, uln)
        if below is None or not (value <= below if row.get("inclusive") else value < below):
            return False
        at_least = row.get("at_least")
        return at_least is None or value >= float(at_least)
    above = _bound(row["above"], lln, uln)
    if above is None or not value > above:
        return False
    at_most = row.get("at_most")
    return at_most is None or value <= float(at_most)


class Interval(NamedTuple):
    """A criteria row as one interval with explicit ends, the same shape for low and high rows: what
    a relational grader needs to join a value against the table with a single predicate,
    `(lower is null or value > lower or (lower_inclusive and value = lower)) and (upper ...)`,
    where "LLN"/"ULN" stand for the result's own limits and the age columns pick the band."""

    version: str
    term: str
    analyte: str
    direction: str
    grade: int
    lower: float | str | None  # a number, "ULN", or None (open)
    lower_inclusive: bool
    upper: float | str | None  # a number, "LLN", or None (open)
    upper_inclusive: bool
    min_age_days: int | None
    max_age_days: int | None
    min_age_years: int | None


def _end(spec: Any) -> float | str | None:
    return spec if spec in ("LLN", "ULN") or spec is None else float(spec)


def as_interval(row: dict[str, Any]) -> Interval:
    """One row as an `Interval` (low rows: [at_least, below); high rows: (above, at_most])."""
    low = row["direction"] == "low"
    lower = row.get("at_least") if low else row["above"]
    upper = row["below"] if low else row.get("at_most")
    return Interval(row["version"], row["term"], row["analyte"], row["direction"], row["grade"],
                    _end(lower), low, _end(upper), bool(row.get("inclusive")) if low else True,
                    row.get("min_age_days"), row.get("max_age_days"), row.get("min_age_years"))


@derived
def criteria_intervals(version: str) -> tuple[Interval, ...]:
    """Every row of a version as an interval, age bands included (the relational engines' view)."""
    return tuple(as_interval(r) for r in criteria_table(version))


def interval_holds(iv: Interval, value: float, lln: float | None, uln: float | None) -> bool:
    """`row_holds` over the interval form (a test holds the two equal, so engines may use either)."""
    def end(spec: float | str | None) -> float | None:
        if spec == "LLN":
            return lln
        if spec == "ULN":
            return uln
        return None if spec is None else float(spec)

    lower, upper = end(iv.lower), end(iv.upper)
    if (iv.lower == "ULN" and lower is None) or (iv.upper == "LLN" and upper is None):
        return False  # a limit the row needs is missing
    if lower is not None and not (value > lower or (iv.lower_inclusive and value == lower)):
        return False
    return upper is None or value < upper or (iv.upper_inclusive and value == upper)


def grade_rows(rows: Sequence[dict[str, Any]], label: str, value: float,
               lln: float | None = None, uln: float | None = None) -> Grade | None:
    """The grade a criteria table gives a value: the first row (worst grade first) that holds.

    The table is passed in, as admiral passes its metadata to derive_var_atoxgr_dir, so any set of
    rows (a site's, a test's) is graded by the same reading.
    """
    for row in rows:
        if row_holds(row, value, lln, uln):
            uses_limit = row.get("below") == "LLN" or row.get("above") == "ULN"
            threshold = describe_row(row, lln, uln)
            return Grade(row["grade"], row["term"], label, threshold, uses_limit,
                         f"{row['term']} grade {row['grade']}: {threshold}")
    return None


@derived(maxsize=65536)
def grade(version: str, analyte: str, direction: str, value: float,
          lln: float | None = None, uln: float | None = None) -> Grade | None:
    """The grade of a value under a criteria version or key, or None when no row holds (or the
    term has no rows at this age).

    Grade 1 of CTCAE needs the LLN; grades 2-4 do not, so a missing LLN can only cost grade 1.
    Cached: a pure function of its arguments, and lab values repeat (they are reported to 2-3 digits).
    """
    return grade_rows(criteria_rows(version, analyte, direction), criteria_label(version), value, lln, uln)


def term_for(version: str, analyte: str, direction: str) -> str | None:
    rows = criteria_rows(version, analyte, direction)
    return rows[0]["term"] if rows else None


@derived
def severity_word(grade_value: int) -> str:
    return load_table("criteria")["severity_words"][str(grade_value)]
