"""The knowledge tables compiled into small relations and Ibis expressions.

The population engine must give the per-patient engine's verdicts, so it never restates a rule:
every number here is read from the same tables (`knowledge/*.toml`) through the same functions the
per-patient rules use. Two techniques are used:

* **Small relations built by the per-patient functions themselves.** A reference range depends on
  (profile, analyte, sex, age), and age only matters at the band edges written in profiles.toml. So
  the ages are cut at those edges into a handful of intervals and `rules.ranges.profile_range` is
  asked once per (profile, analyte, sex, interval); the answers form a memtable that is joined with
  the data. Units, codes and sexes are handled the same way: the *distinct* spellings found in the
  data (a few dozen) go through `units.convert`, `units.loinc_lookup` and `request.parse_patient`,
  and the answers are joined back. Parity is by construction, and the big table is only joined.
* **Expressions generated from table rows.** The grade is a CASE over
  `rules.grading.criteria_rows` with the same strictness as `rules.grading.row_holds` (for DAIDS,
  each row guarded by its age band as `rules.grading.row_applies`), and the neutropenia severity
  word a CASE over severity.toml.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, get_args

import ibis
import ibis.expr.types as ir

from ..knowledge import load_table
from ..model import ANALYTES, DIFFERENTIAL_ANALYTES, InputError, Sex
from ..request import parse_patient
from ..rules.causes import match_medications
from ..rules.findings import HIGH_FINDING, LOW_FINDING, UNGRADED
from ..rules.grading import (
    DAYS_PER_YEAR,
    age_banded,
    age_caps,
    criteria_label,
    criteria_rows,
    criteria_table,
    grades_within_range,
    severity_word,
)
from ..rules.ranges import profile_names, profile_range
from ..units import canonical_analyte, convert, loinc_lookup, plausibility, smaller_than_canonical
from .inline import inline_table

#: Band index given to a person whose age is unknown (profile_range reads it as adult).
UNKNOWN_AGE_BAND = -1
#: Band index of a negative age (a result dated before the birth date).
BEFORE_BIRTH_BAND = -2
#: rules.ranges reads a missing age_min as birth.
_DEFAULT_AGE_MIN = float(0)


# ---------------------------------------------------------------------------------------------
# Reference ranges


def age_edges() -> list[float]:
    """Every finite age bound written in profiles.toml, ascending: the only ages where a range can change."""
    edges: set[float] = set()
    for spec in load_table("profiles")["profiles"].values():
        for row in spec.get("ranges", []):
            for key in ("age_min", "age_max"):
                if key in row and math.isfinite(float(row[key])):
                    edges.add(float(row[key]))
    if edges:
        edges.add(_DEFAULT_AGE_MIN)  # a band without age_min starts at 0 (rules.ranges._row_matches)
    return sorted(edges)


def _band_ages() -> list[tuple[int, float | None, float | None]]:
    """(band index, first age of the band, first age after it) for every band, plus the unknown-age band;
    the first age stands for the whole band when `profile_range` is asked."""
    edges = age_edges()
    bands: list[tuple[int, float | None, float | None]] = [(UNKNOWN_AGE_BAND, None, None)]
    if edges:
        bands.append((BEFORE_BIRTH_BAND, edges[0] - 1, edges[0]))
    bands += [(i, edge, edges[i + 1] if i + 1 < len(edges) else None) for i, edge in enumerate(edges)]
    return bands


def age_band(age: ir.FloatingValue) -> ir.IntegerValue:
    """The band index of an age: the edges come from profiles.toml, so no bound is restated here."""
    edges = age_edges()
    branches: list[tuple[Any, int]] = [(age.isnull(), UNKNOWN_AGE_BAND)]
    if edges:
        branches.append((age < edges[0], BEFORE_BIRTH_BAND))
        branches += [(age < edges[i + 1], i) for i in range(len(edges) - 1)]
    return ibis.cases(*branches, else_=max(len(edges) - 1, 0))


def _range_analytes() -> list[str]:
    names: list[str] = []
    for spec in load_table("profiles")["profiles"].values():
        for row in spec.get("ranges", []):
            if not row.get("percent", False) and row["analyte"] not in names:
                names.append(row["analyte"])
    return names


def ranges_rows() -> list[dict[str, Any]]:
    """profile x analyte x sex x age band -> low/high with their sources (absolute counts only), numbered.

    The screen writes these rows as `ranges.parquet` and each graded result carries its `range_id`, so
    the source of every profile limit is one join away without repeating its text on millions of rows.
    """
    rows: list[dict[str, Any]] = []
    for profile in profile_names():
        for analyte in _range_analytes():
            for sex in get_args(Sex):
                for band, age, age_to in _band_ages():
                    rng = profile_range(profile, analyte, sex, age, percent=False)
                    rows.append({
                        "range_id": len(rows), "profile": profile, "analyte": analyte, "sex": sex, "band": band,
                        "age_from": None if band == BEFORE_BIRTH_BAND else age, "age_to": age_to,
                        "prof_low": rng.low.value if rng.low else None,
                        "prof_high": rng.high.value if rng.high else None,
                        "low_source": rng.low.source if rng.low else None,
                        "high_source": rng.high.source if rng.high else None,
                    })
    return rows


RANGES_SCHEMA = {"range_id": "int64", "profile": "string", "analyte": "string", "sex": "string", "band": "int64",
                 "age_from": "float64", "age_to": "float64", "prof_low": "float64", "prof_high": "float64",
                 "low_source": "string", "high_source": "string"}


def ranges_relation() -> ir.Table:
    return inline_table(ranges_rows(), RANGES_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Codes and units


@dataclass(frozen=True)
class CodeAnswer:
    analyte: str | None
    percent: bool | None
    factor: float | None
    unit: str | None
    reason: str | None
    reason_code: str | None


def classify(analyte_raw: str | None, loinc_raw: str | None, unit_raw: str | None) -> CodeAnswer:
    """What `request.parse_observation` decides about a row's analyte/code and unit, minus the value."""
    try:
        percent_code: bool | None = None
        if analyte_raw is not None and analyte_raw.strip():
            analyte = canonical_analyte(analyte_raw, "analyte")
        elif loinc_raw is not None and loinc_raw.strip():
            entry = loinc_lookup(loinc_raw)
            if entry is None:
                return CodeAnswer(None, None, None, None,
                                  f"LOINC code {loinc_raw!r} is not a blood count code leukowatch reads",
                                  "unknown_code")
            analyte, percent_code = entry.analyte, entry.percent
        else:
            return CodeAnswer(None, None, None, None, "needs an analyte or a LOINC code", "unknown_analyte")
    except InputError as err:
        return CodeAnswer(None, None, None, None, err.problem, "unknown_analyte")
    try:
        converted = convert(analyte, 1.0, unit_raw, "unit")
    except InputError as err:
        code = "missing_unit" if unit_raw is None or not unit_raw.strip() else (
            "unit_mismatch" if "does not fit" in err.problem else "unknown_unit")
        return CodeAnswer(analyte, None, None, None, err.problem, code)
    if percent_code is not None and percent_code != converted.percent:
        expected = "a percentage (%)" if percent_code else "an absolute count unit"
        return CodeAnswer(analyte, None, None, None, f"LOINC {loinc_raw} is {expected} but the unit is {unit_raw!r}",
                          "unit_mismatch")
    return CodeAnswer(analyte, converted.percent, converted.factor, converted.unit, None, None)


#: Every (analyte, percent) a result can be, numbered, so a draw's results fit in the bits of one integer:
#: the screen finds duplicate results in a draw (a bit counted twice) with two sums, no sort.
SLOTS: tuple[tuple[str, bool], ...] = tuple((a, p) for a in ANALYTES for p in (False, True))


def slot_bit(analyte: str, percent: bool) -> int:
    return 1 << SLOTS.index((analyte, percent))


def codes_relation(rows: list[dict[str, Any]]) -> ir.Table:
    """`code_rows` as a relation, joined with the raw rows on the three keys."""
    schema = {"_ak": "string", "_ck": "string", "_uk": "string", "c_analyte": "string", "c_percent": "boolean",
              "c_factor": "float64", "c_unit": "string", "c_reason": "string", "c_reason_code": "string",
              "c_bit": "int64", "c_ok": "boolean", "c_max": "float64", "c_slip_below": "float64"}
    return inline_table(rows, schema)


def code_rows(distinct: Iterable[tuple[str | None, str | None, str | None]]) -> list[dict[str, Any]]:
    """(analyte key, loinc key, unit key) -> canonical analyte, %, factor, or the reject reason.

    Keys are the raw strings with NULL read as '' so the join never loses a row to NULL semantics.
    The per-code parts of `request.parse_observation`'s checks are answered here once per spelling, so a
    row's validation is a few comparisons: `c_ok` (the analyte/code and unit are readable), `c_max` (the
    largest plausible value in canonical units: 100 for a percentage, units.toml's WBC limit for an
    absolute WBC) and `c_slip_below` (an absolute WBC sent per microlitre under this value is a unit slip:
    rules.differential.derive_draw).
    """
    limits = plausibility()
    rows = []
    for a, c, u in distinct:
        ans = classify(a or None, c or None, u or None)
        ok = ans.reason is None
        wbc_count = ok and ans.analyte == "wbc" and not ans.percent
        rows.append({"_ak": a or "", "_ck": c or "", "_uk": u or "", "c_analyte": ans.analyte,
                     "c_percent": ans.percent, "c_factor": ans.factor, "c_unit": ans.unit,
                     "c_reason": ans.reason, "c_reason_code": ans.reason_code,
                     "c_bit": None if ans.analyte is None or ans.percent is None else slot_bit(ans.analyte, ans.percent),
                     "c_ok": ok,
                     "c_max": float(limits["max_percent"]) if ok and ans.percent else (
                         float(limits["max_wbc"]) if wbc_count else math.inf),
                     "c_slip_below": float(limits["min_reported_wbc"]) if wbc_count and smaller_than_canonical(ans.factor) else 0.0})
    return rows


def sex_rows(distinct: Iterable[str | None]) -> list[dict[str, Any]]:
    """Raw sex spellings -> male/female/unknown as `request.parse_patient` reads them, or a reason (`s_ok`:
    none)."""
    rows = []
    for raw in distinct:
        try:
            sex, reason = parse_patient({"sex": raw if raw is not None else "unknown"}).sex, None
        except InputError as err:
            sex, reason = None, f"sex: {err.problem}"
        rows.append({"_sk": raw or "", "s_sex": sex, "s_reason": reason, "s_ok": reason is None})
    return rows


def sexes_relation(rows: list[dict[str, Any]]) -> ir.Table:
    """`sex_rows` as a relation, joined with the raw rows on the spelling."""
    return inline_table(rows, {"_sk": "string", "s_sex": "string", "s_reason": "string", "s_ok": "boolean"})


# ---------------------------------------------------------------------------------------------
# Findings, grades, severity


def finding_code(analyte: ir.StringValue, flag: ir.StringValue, value: ir.FloatingValue,
                 within: ir.StringValue | None = None) -> ir.StringValue:
    """rules.findings.findings_from_counts: low -> LOW_FINDING, high -> HIGH_FINDING, basophils 0 -> basopenia;
    with `within` (`within_range_code`, a version that grades within the range), a normal count's low
    finding where one of the version's low rows holds it."""
    # most results are normal: the first branch settles them; the rest are compared with the analytes of
    # their flag only (a CASE per flag, not one flat CASE over every flag and analyte)
    null = ibis.null("string")

    def by_analyte(codes: dict[str, str]) -> ir.StringValue:
        return ibis.cases(*[(analyte == a, code) for a, code in codes.items()], else_=null)

    return ibis.cases(((flag == "normal") & (analyte != "basophils"), null if within is None else within),
                      (flag == "low", by_analyte(LOW_FINDING)), (flag == "high", by_analyte(HIGH_FINDING)),
                      ((analyte == "basophils") & (value == 0), LOW_FINDING["basophils"]), else_=null)


def within_range_code(criteria: str, analyte: ir.StringValue, value: ir.FloatingValue, lln: ir.FloatingValue,
                      uln: ir.FloatingValue, age: AgeTerms | None) -> ir.StringValue | None:
    """rules.findings' grade within the range as an expression: for a normal count (the caller's branch), the
    analyte's low finding where a low row of the version holds the value at this age, else NULL. None (no
    branch at all, so the SQL of CTCAE is unchanged) unless the version has `grades_within_range` (DAIDS)."""
    if not grades_within_range(criteria):
        return None
    branches = []
    for a, direction, code in _graded_pairs():
        holds = []
        for row in _rows_for(criteria, a, direction, age) if direction == "low" else []:
            cond = _row_holds(row, value, lln, uln)
            holds.append(cond if age is None else cond & _band(row, age))
        if holds:
            branches.append(((analyte == a) & ibis.or_(*holds), code))
    return ibis.cases(*branches, else_=ibis.null("string")) if branches else None


def _row_holds(row: dict[str, Any], value: ir.FloatingValue, lln: ir.FloatingValue,
               uln: ir.FloatingValue) -> ir.BooleanValue:
    """rules.grading.row_holds as an expression (strict on the worse side, inclusive on the milder)."""
    if row["direction"] == "low":
        bound = lln if row["below"] == "LLN" else ibis.literal(float(row["below"]))
        cond = bound.notnull() & ((value <= bound) if row.get("inclusive") else (value < bound))
        if "at_least" in row:
            cond = cond & (value >= float(row["at_least"]))
    else:
        bound = uln if row["above"] == "ULN" else ibis.literal(float(row["above"]))
        cond = bound.notnull() & (value > bound)
        if "at_most" in row:
            cond = cond & (value <= float(row["at_most"]))
    return cond


def _graded_pairs() -> list[tuple[str, str, str]]:
    pairs = [(a, "low", code) for a, code in LOW_FINDING.items()]
    pairs += [(a, "high", code) for a, code in HIGH_FINDING.items()]
    return [p for p in pairs if p[2] not in UNGRADED]


class AgeTerms(NamedTuple):
    """rules.grading.criteria_for_age's age as expressions: whole days and completed years at the
    result (NULL where the age is unknown, so that no age-banded row applies)."""

    days: ir.IntegerValue
    years: ir.IntegerValue


def age_terms(criteria: str, time: ir.TimestampValue, birth_date: ir.DateValue,
              age_years: ir.FloatingValue) -> AgeTerms | None:
    """The age an age-banded criteria version (DAIDS) picks its rows by, per result; None for the others.

    As rules.grading.criteria_for_age: from the birth date to the result date when both are known;
    else a stated age past the last band in days is past it and a younger one leaves the days unknown;
    a birth date without a result time gives no age; no age at all is an adult.
    """
    if not age_banded(criteria):
        return None
    day_cap, year_cap = age_caps(criteria)
    on = time.date()
    dated = birth_date.notnull() & time.notnull()
    born_days = on.delta(birth_date, unit="day")
    not_yet = ((on.month() * 100 + on.day()) < (birth_date.month() * 100 + birth_date.day())).cast("int64")
    born_years = on.year() - birth_date.year() - not_yet
    null = ibis.null("int64")
    cap_days, cap_years = ibis.literal(day_cap or 0, "int64"), ibis.literal(year_cap or 0, "int64")
    stated_days = null if day_cap is None else ibis.cases((age_years * DAYS_PER_YEAR >= day_cap, cap_days),
                                                          else_=null)
    days = ibis.cases((dated, born_days.cast("int64")), (age_years.notnull(), stated_days),
                      (birth_date.notnull(), null), else_=cap_days)
    years = ibis.cases((dated, born_years.cast("int64")), (age_years.notnull(), age_years.floor().cast("int64")),
                       (birth_date.notnull(), null), else_=cap_years)
    return AgeTerms(days, years)


def _band(row: dict[str, Any], age: AgeTerms) -> ir.BooleanValue:
    """rules.grading.row_applies as an expression."""
    cond = ibis.literal(True)
    if "min_age_days" in row or "max_age_days" in row:
        cond = cond & age.days.notnull() & (age.days >= row.get("min_age_days", 0))
        if "max_age_days" in row:
            cond = cond & (age.days <= row["max_age_days"])
    if "min_age_years" in row:
        cond = cond & age.years.notnull() & (age.years >= row["min_age_years"])
    return cond


def _rows_for(criteria: str, analyte: str, direction: str, age: AgeTerms | None) -> list[dict[str, Any]]:
    """The rows a CASE tries: the key's rows, or every age band's (each guarded by `_band`), worst first."""
    if age is None:
        return list(criteria_rows(criteria, analyte, direction))
    rows = [r for r in criteria_table(criteria) if r["analyte"] == analyte and r["direction"] == direction]
    return sorted(rows, key=lambda r: -r["grade"])


def grade_expr(criteria: str, analyte: ir.StringValue, finding: ir.StringValue, value: ir.FloatingValue,
               lln: ir.FloatingValue, uln: ir.FloatingValue, age: AgeTerms | None = None) -> ir.IntegerValue:
    """rules.grading.grade over criteria.toml rows, worst grade first, for each graded finding (with
    `age`, each row only within its age band: the bands of one term never overlap)."""
    # a CASE per finding inside one over the findings: a row is compared with its own finding's criteria
    # rows only (a flat CASE tested every finding's rows in turn: twice the work)
    null = ibis.null("int64")
    branches: list[tuple[Any, Any]] = [(finding.isnull(), null)]  # most rows: settled at once
    for a, direction, code in _graded_pairs():
        rows = []
        for row in _rows_for(criteria, a, direction, age):
            cond = _row_holds(row, value, lln, uln)
            if age is not None:
                cond = cond & _band(row, age)
            rows.append((cond, int(row["grade"])))
        if rows:
            branches.append(((finding == code) & (analyte == a), ibis.cases(*rows, else_=null)))
    if len(branches) == 1:
        return null
    return ibis.cases(*branches, else_=null)


def term_expr(criteria: str, finding: ir.StringValue, age: AgeTerms | None = None) -> ir.StringValue:
    """rules.grading.term_for: the term of the finding's rows (with `age`, only where a band applies)."""
    branches = []
    for a, d, code in _graded_pairs():
        rows = _rows_for(criteria, a, d, age)
        if not rows:
            continue
        cond = finding == code
        if age is not None:
            bands = [_band(row, age) for row in rows]
            cond = cond & ibis.or_(*bands)
        branches.append((cond, rows[0]["term"]))
    if not branches:
        return ibis.null("string")
    return ibis.cases((finding.isnull(), ibis.null("string")), *branches, else_=ibis.null("string"))


def term_values(criteria: str) -> tuple[str, ...]:
    """Every term `term_expr` can give under `criteria` (an output column's complete list of values)."""
    return tuple(dict.fromkeys(str(r["term"]) for r in criteria_table(criteria)))


def severity_values() -> tuple[str, ...]:
    """Every word `severity_expr` can give."""
    words = [str(row["word"]) for row in load_table("severity")["neutropenia"]]
    words += [severity_word(int(k)) for k in load_table("criteria")["severity_words"] if k.isdigit()]
    return tuple(dict.fromkeys(words))


def severity_expr(finding: ir.StringValue, grade: ir.IntegerValue, value: ir.FloatingValue,
                  lln: ir.FloatingValue) -> ir.StringValue:
    """rules.findings: neutropenia words from severity.toml; other graded findings the CTCAE word."""
    branches: list[tuple[Any, Any]] = [(finding.isnull(), ibis.null("string"))]  # most rows: settled at once
    for row in load_table("severity")["neutropenia"]:
        limit = lln if row["below"] == "LLN" else ibis.literal(float(row["below"]))
        branches.append(((finding == "neutropenia") & limit.notnull() & (value < limit), row["word"]))
    words = {k: v for k, v in load_table("criteria")["severity_words"].items() if k.isdigit()}
    branches += [((finding != "neutropenia") & (grade == int(k)), severity_word(int(k))) for k in words]
    return ibis.cases(*branches, else_=ibis.null("string"))


def criteria_text(criteria: str) -> str:
    return criteria_label(criteria)


# ---------------------------------------------------------------------------------------------
# Medicines


def drugs_relation(names: Iterable[str]) -> ir.Table:
    """Distinct medicine names -> the listed drugs they name (rules.causes.match_medications)."""
    rows = []
    for name in names:
        for m in match_medications([name]):
            rows.append({"name": name, "generic": m.generic, "drug_class": m.drug_class,
                         "chemotherapy": m.chemotherapy, "risk": m.risk})
    schema = {"name": "string", "generic": "string", "drug_class": "string", "chemotherapy": "boolean",
              "risk": "string"}
    return inline_table(rows, schema)


#: Differential analytes whose absolute count can be derived as WBC x % / 100 (segments feed the ANC).
DERIVABLE: tuple[str, ...] = tuple(a for a in DIFFERENTIAL_ANALYTES if a != "segmented_neutrophils")
