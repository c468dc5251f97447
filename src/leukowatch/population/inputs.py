"""Where a screen's rows come from: tabular files, an OMOP CDM, or the leukowatch DuckDB store.

Every source is turned into the same *raw* relation (one row per input result, nothing judged yet)
plus a patients and a medications relation, so one pipeline serves them all:

    raw:         _row, _src, patient_id, time, analyte, loinc, value, unit, low, high,
                 sex, birth_date, age_years, duffy_null
    medications: patient_id, name, start, stop
    temperatures: patient_id, time, temperature_c (optional)

`_row` is the reading order, used (as the per-patient engine uses list order) to pick the later of
two different values for one analyte in one draw. Nothing is loaded into pandas: DuckDB and Spark
scan the files themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from ..model import InputError
from ..request import COMPARATORS, THOUSANDS_OR_DECIMAL

#: OMOP standard concepts -> LOINC / UCUM (docs/clinical-reference.md §10). Used when no CONCEPT table is
#: given; a CONCEPT table, when present, is preferred.
OMOP_MEASUREMENT_LOINC: dict[int, str] = {3000905: "6690-2", 3013650: "751-8", 3017732: "26499-4"}
OMOP_UNIT_UCUM: dict[int, str] = {9444: "10*9/L", 8848: "10*3/uL", 8961: "10*3/mm3", 8647: "/uL",
                                  8784: "{cells}/uL"}
OMOP_GENDER: dict[int, str] = {8507: "male", 8532: "female"}

#: Column spellings accepted for the tabular mapping (first present wins).
TABULAR_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient_id", "person_id", "patient"),
    "time": ("time", "datetime", "effective_time", "measurement_datetime"),
    "analyte": ("analyte",),
    "loinc": ("loinc", "code", "loinc_code"),
    "value": ("value", "result"),
    "unit": ("unit", "units"),
    "low": ("low", "ref_low", "range_low"),
    "high": ("high", "ref_high", "range_high"),
    "sex": ("sex", "gender"),
    "birth_date": ("birth_date", "birthdate", "dob"),
    "age_years": ("age_years",),
    "duffy_null": ("duffy_null",),
}
_TYPES: dict[str, str] = {"patient_id": "string", "analyte": "string", "loinc": "string", "unit": "string",
                          "sex": "string", "low": "float64", "high": "float64", "age_years": "float64", "birth_date": "date",
                          "duffy_null": "boolean"}
_OMOP_TABLES = ("measurement", "person", "drug_exposure", "concept")
#: Files (or tables) the demo and exports write next to the observations.
_MEDICATION_NAMES = ("medications", "medication", "drug_exposure")
_TEMPERATURE_NAMES = ("temperatures", "temperature", "vitals")
#: Files a demo set or a previous screen writes beside the observations that are not results.
_NOT_OBSERVATIONS = ("truth", "persons", "patients", "chemotherapy", "conditions", "dirty_rows", "manifest",
                     "rejects", "summary", "graded", "ranges", "findings", "episodes", "chronic", "drug_episodes", "cyclic",
                     "febrile", "flags")


@dataclass
class Sources:
    """What a screen reads, already as Ibis relations on the chosen backend."""

    raw: ir.Table
    medications: ir.Table | None
    temperatures: ir.Table | None
    kind: str
    patients: ir.Table | None = None  # from PERSON / the store's patients table, when the source has one


def _pick(t: ir.Table, names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in t.columns}
    return next((lower[n] for n in names if n in lower), None)


#: Every character Ibis's strip() removes (the ASCII whitespace) sorts below this one.
ABOVE_WHITESPACE = "!"


def strip_text(text: ir.StringValue) -> ir.StringValue:
    """`text.strip()`, done only to text that starts or ends with a character below ABOVE_WHITESPACE. DuckDB's
    TRIM of a set of characters costs six times a comparison (0.22 against 0.04 CPU s per 1M rows), and a
    CSV's text columns were stripped several times per row in every query: a 3M-row CSV screened in 31 s."""
    padded = (text < ABOVE_WHITESPACE) | (text.right(1) < ABOVE_WHITESPACE)
    return ibis.cases((padded, text.strip()), else_=text)


def parse_time(col: ir.Value) -> ir.TimestampValue:
    """Strings are parsed (unparseable -> NULL, which the pipeline rejects); dates become midnight UTC."""
    if col.type().is_string():
        return strip_text(col).try_cast("timestamp")
    if col.type().is_date():
        return col.cast("timestamp")
    if col.type().is_timestamp():
        return col.cast("timestamp") if col.type().timezone is not None else col
    return col.cast("string").try_cast("timestamp")


def parse_date_col(col: ir.Value) -> ir.DateValue:
    if col.type().is_string():
        return strip_text(col).substr(0, 10).try_cast("date")
    if col.type().is_timestamp():
        return col.date()
    return col.cast("date")


def standardise(t: ir.Table, src: str, row: ir.IntegerValue) -> ir.Table:
    """Map a tabular relation's columns onto the raw schema (missing optional columns become NULL)."""
    cols: dict[str, Any] = {"_row": row.cast("int64"), "_src": ibis.literal(src)}
    for name, spellings in TABULAR_COLUMNS.items():
        found = _pick(t, spellings)
        if found is None:
            if name in ("patient_id", "value"):
                raise InputError(src, f"no {name} column (looked for {', '.join(spellings)})")
            cols[name] = ibis.null(_TYPES.get(name, "string"))
            continue
        c = t[found]
        if name == "time":
            cols[name] = c.cast("string") if not (c.type().is_timestamp() or c.type().is_date()) else c
            cols["time"] = parse_time(cols["time"]) if c.type().is_string() else parse_time(c)
        elif name == "birth_date":
            cols[name] = parse_date_col(c)
        elif name == "value":
            cols[name] = c if c.type().is_string() else c.cast("float64")
        elif name in ("low", "high") and c.type().is_string():
            # text is parsed as the value is, in `pipeline.validate` (a non-number rejects its row); an
            # empty one is no bound, as the readers take it
            cols[name] = strip_text(c).nullif("")
        elif name == "duffy_null":
            cols[name] = c.cast("boolean") if not c.type().is_string() else c.lower().isin(["true", "1", "yes"])
        else:
            cols[name] = c.cast(_TYPES.get(name, "string"))
    if "time" not in cols:
        cols["time"] = ibis.null("timestamp")
    return t.select(**cols)


def _decimal_point(text: ir.StringValue) -> ir.StringValue:
    """request.parse_number: one comma and no point is a decimal comma, unless it stands before exactly three
    digits ('1,500': thousands or decimals, never guessed): that text keeps its comma, so it is not a number
    and its row is rejected. The pattern is tested only on the text with one comma (a nested CASE)."""
    one_comma = text.contains(",") & ~text.contains(".") & ((text.length() - text.replace(",", "").length()) == 1)
    return ibis.cases((one_comma, ibis.cases((ambiguous_comma(text), text), else_=text.replace(",", "."))),
                      else_=text)


def ambiguous_comma(text: ir.StringValue) -> ir.BooleanValue:
    """request.parse_number's ambiguous comma ('1,500', '< 150,000'), on stripped text that may start with a
    comparator."""
    return text.re_search(_LEADING_COMPARATOR + "?[ \t\n\r\x0b\x0c]*" + THOUSANDS_OR_DECIMAL.pattern + "$")


def _comparator(text: ir.StringValue) -> ir.StringValue:
    return ibis.cases(*[(text.startswith(k), k) for k in COMPARATORS], else_=ibis.null("string"))


#: A leading comparator (request.COMPARATORS, longest first) as a regular expression.
_LEADING_COMPARATOR = "^(" + "|".join(COMPARATORS) + ")"


def _after_comparator(text: ir.StringValue, comparator: ir.StringValue) -> ir.StringValue:
    return ibis.cases(*[(comparator == k, text[len(k):]) for k in COMPARATORS], else_=text)


def with_numbers(t: ir.Table, columns: dict[str, str], in_steps: bool = True) -> ir.Table:
    """`t` with each text or number column of `columns` (source -> name) parsed as request.parse_number reads
    text: stripped, one comma and no point read as a decimal comma ('1,5'), a leading comparator ('<0.5',
    '>= 2') kept apart in `<name>_comparator`; `<name>` is NULL when the text is not a number.

    `in_steps` (DuckDB): comparisons and prefixes rather than regular expressions, in steps whose results
    are columns. Ibis inlines an expression wherever it is used, and the parse written as one expression
    grew to thousands of lines of SQL that evaluated each value hundreds of times on DuckDB (a 3M-row CSV:
    31 s -> 10 s in steps). Spark plans those steps badly (the Spark parity test: 17 s -> 68 s), so there
    each number is one expression, as before.
    """
    text = [c for c in columns if t[c].type().is_string()]
    if text and in_steps:
        t = t.mutate(**{f"_s_{c}": strip_text(t[c]) for c in text})
        t = t.mutate(**{f"_d_{c}": _decimal_point(t[f"_s_{c}"]) for c in text})
        t = t.mutate(**{f"_k_{c}": _comparator(t[f"_d_{c}"]) for c in text})
        t = t.mutate(**{f"_r_{c}": _after_comparator(t[f"_d_{c}"], t[f"_k_{c}"]) for c in text})

    def parsed(c: str) -> tuple[ir.FloatingValue, ir.StringValue]:
        if c not in text:
            return t[c].cast("float64"), ibis.null("string")
        if in_steps:
            return strip_text(t[f"_r_{c}"]).try_cast("float64"), t[f"_k_{c}"]
        d = _decimal_point(t[c].strip())
        return (d.re_replace(_LEADING_COMPARATOR, "").strip().try_cast("float64"),
                d.re_extract(_LEADING_COMPARATOR, 1).nullif(""))

    out: dict[str, Any] = {}
    for c, name in columns.items():
        out[name], out[f"{name}_comparator"] = parsed(c)
    t = t.mutate(**out)
    return t.drop(*[f"_{x}_{c}" for c in text for x in "sdkr"]) if in_steps else t


# ---------------------------------------------------------------------------------------------
# File discovery


def _files_in(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".csv", ".duckdb", ".db"))
    return [path]


def classify_inputs(inputs: list[str]) -> dict[str, list[Path]]:
    """Group the given files by role: observations, medications, temperatures, OMOP tables, store."""
    groups: dict[str, list[Path]] = {"observations": [], "medications": [], "temperatures": [], "omop": [],
                                     "store": []}
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(item, "file not found")
        for f in _files_in(path):
            stem = f.stem.lower()
            if f.suffix.lower() in (".duckdb", ".db"):
                groups["store"].append(f)
            elif stem in _OMOP_TABLES:
                groups["omop"].append(f)
            elif stem in _MEDICATION_NAMES:
                groups["medications"].append(f)
            elif stem in _TEMPERATURE_NAMES:
                groups["temperatures"].append(f)
            elif stem in _NOT_OBSERVATIONS or f.suffix.lower() not in (".parquet", ".csv"):
                continue
            else:
                groups["observations"].append(f)
    return groups


def file_size(paths: list[Path]) -> int:
    return sum(os.path.getsize(p) for p in paths if p.exists())
