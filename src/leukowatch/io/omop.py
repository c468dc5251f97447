"""OMOP CDM v5.4 -> observations: MEASUREMENT (+ PERSON for sex and birth date, + DRUG_EXPOSURE for
medicines), from CSV files, Parquet files or a DuckDB database.

DuckDB reads all three the same way, so one SQL path serves them. Concept ids map through
`knowledge/omop.toml` (shared with the population engine); a measurement whose concept is not
listed is still read when its `measurement_source_value` is a LOINC code leukowatch knows.
A repeated measurement_id, or a row repeating an earlier result (`result.DUPLICATE_KEY`), is
rejected as a duplicate naming the first one.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from ..knowledge import derived, load_table
from ..model import InputError, MedicationInput, Patient
from ..units import loinc_lookup
from .result import Collector, ReadResult, lenient_date

_TABLES = ("measurement", "person", "drug_exposure", "concept")
_SUFFIXES = (".csv", ".parquet", ".tsv", ".csv.gz")
_FIELD = {".unit": " unit_concept_id/unit_source_value", ".value": " value_as_number",
          ".code": " measurement_concept_id", ".reference_range": " range_low/range_high",
          ".time": " measurement_datetime"}


@derived
def omop_maps() -> dict[str, dict[str, Any]]:
    """The omop.toml maps keyed by concept id as int (the population engine uses these too)."""
    t = load_table("omop")
    return {
        "measurement": {int(k): v for k, v in t["measurement_concepts"].items()},
        "unit": {int(k): v["unit"] for k, v in t["unit_concepts"].items()},
        "operator": {int(k): v["comparator"] for k, v in t["operator_concepts"].items()},
        "gender": {int(k): v for k, v in t["gender_concepts"].items() if k.isdigit()},
    }


def _source_sql(path: Path) -> str:
    if path.suffix.lower() == ".parquet":
        return f"read_parquet('{_quote(path)}')"
    return f"read_csv('{_quote(path)}', header=true, all_varchar=true)"


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _find_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = p.name.lower()
        for name in _TABLES:
            if any(stem == name + s for s in _SUFFIXES):
                found.setdefault(name, p)
    return found


def _connect(path: Path, table: str | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views m (measurement), and p, d, c when present."""
    con = duckdb.connect()
    views: dict[str, str] = {}
    try:
        if path.is_dir():
            views = {n: _source_sql(p) for n, p in _find_files(path).items()}
        elif path.suffix.lower() in (".duckdb", ".ddb", ".db") or path.read_bytes()[8:12] == b"DUCK":
            con.execute(f"ATTACH '{_quote(path)}' AS src (READ_ONLY)")
            rows = con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'src'"
                               ).fetchall()
            for name in _TABLES:
                want = (table or name) if name == "measurement" else name
                hit = next((f'src."{s}"."{t}"' for s, t in rows if t.lower() == want.lower()), None)
                if hit:
                    views[name] = hit
        else:
            views["measurement"] = _source_sql(path)
            siblings = _find_files(path.parent)
            views.update({n: _source_sql(p) for n, p in siblings.items() if n != "measurement"})
        if "measurement" not in views:
            raise InputError(str(path), "no OMOP MEASUREMENT table found (measurement.csv/.parquet or a "
                                        "'measurement' table)")
        for name, sql in views.items():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {sql}")
    except duckdb.Error as exc:
        con.close()
        raise InputError(str(path), f"cannot read the OMOP tables ({str(exc).splitlines()[0]})") from None
    return con


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        raise InputError("omop", f"query failed: {str(exc).splitlines()[0]}") from None
    names = [d[0].lower() for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _int(value: Any) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _has(con: duckdb.DuckDBPyConnection, view: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [view]).fetchone()[0])


def read_omop(path: Path, table: str | None = None) -> ReadResult:
    con = _connect(path, table)
    try:
        return _read(con, path)
    finally:
        con.close()


def _read(con: duckdb.DuckDBPyConnection, path: Path) -> ReadResult:
    maps = omop_maps()
    col = Collector("omop", str(path), _FIELD)
    rows = _rows(con, "SELECT * FROM measurement")
    for number, row in enumerate(rows, start=1):
        mid = row.get("measurement_id")
        locator = f"measurement_id {mid}" if mid not in (None, "") else f"measurement row {number}"
        person = row.get("person_id")
        pid = None if person in (None, "") else str(_int(person) or person)
        if mid not in (None, ""):
            first = col.first_seen(str(mid), f"measurement row {number}")
            if first is not None:
                col.duplicate(f"measurement row {number}", first, row, pid, f" (measurement_id {mid} again)")
                continue
        concept = _int(row.get("measurement_concept_id"))
        source_value = str(row.get("measurement_source_value") or "").strip()
        mapped = maps["measurement"].get(concept) if concept is not None else None
        if mapped is not None:
            obs: dict[str, Any] = {"code": mapped["loinc"]}
        elif source_value and loinc_lookup(source_value):
            obs = {"code": source_value}
        else:
            col.skip(f"{locator} measurement_concept_id", f"concept {concept} ({source_value or 'no source value'}) "
                                                          "is not a blood count leukowatch reads", row, pid)
            continue
        value = row.get("value_as_number")
        comparator = maps["operator"].get(_int(row.get("operator_concept_id")) or -1, "")
        obs["value"] = f"{comparator}{value}" if comparator and value not in (None, "") else value
        unit_concept = _int(row.get("unit_concept_id"))
        obs["unit"] = maps["unit"].get(unit_concept or -1) or (row.get("unit_source_value") or None)
        when = row.get("measurement_datetime") or row.get("measurement_date")
        if when not in (None, ""):
            obs["time"] = when if isinstance(when, (date, datetime)) else str(when)
        rng = {side: row[f"range_{side}"] for side in ("low", "high") if row.get(f"range_{side}") not in (None, "")}
        if rng:
            obs["reference_range"] = rng
        obs["source"] = f"{path.name}:{locator}"
        col.offer(obs, locator, patient_id=pid,
                  source_key=f"omop:{path.name}:{mid or number}", source_id=None if mid is None else str(mid),
                  line=number, raw=row)
    if _has(con, "person"):
        for row in _rows(con, "SELECT * FROM person"):
            col.result.patients.append(_person(row, maps["gender"]))
    if _has(con, "drug_exposure"):
        col.result.medications.extend(_drugs(con))
    return col.finish()


def _person(row: dict[str, Any], genders: dict[int, str]) -> Patient:
    rule = load_table("omop")["person"]
    birth: date | None = None
    bdt = row.get("birth_datetime")
    if isinstance(bdt, (date, datetime)):
        birth = bdt if not isinstance(bdt, datetime) else bdt.date()
    elif isinstance(bdt, str) and len(bdt) >= 10:
        try:
            birth = date.fromisoformat(bdt[:10])
        except ValueError:
            birth = None
    year = _int(row.get("year_of_birth"))
    if birth is None and year:
        try:
            birth = date(year, _int(row.get("month_of_birth")) or rule["missing_month"],
                         _int(row.get("day_of_birth")) or rule["missing_day"])
        except ValueError:
            birth = None
    sex = genders.get(_int(row.get("gender_concept_id")) or -1, "unknown")
    pid = row.get("person_id")
    return Patient(id=None if pid in (None, "") else str(_int(pid) or pid), sex=sex,  # type: ignore[arg-type]
                   birth_date=birth)


def _drugs(con: duckdb.DuckDBPyConnection) -> list[tuple[str | None, MedicationInput]]:
    name_sql = "d.drug_source_value"
    if _has(con, "concept"):
        name_sql = "coalesce(c.concept_name, d.drug_source_value)"
        join = "LEFT JOIN concept c ON TRY_CAST(c.concept_id AS BIGINT) = TRY_CAST(d.drug_concept_id AS BIGINT)"
    else:
        join = ""
    out = []
    for row in _rows(con, f"""SELECT d.person_id, {name_sql} AS name, d.drug_exposure_start_date AS start,
                                     d.drug_exposure_end_date AS stop FROM drug_exposure d {join}"""):
        if not row["name"]:
            continue
        out.append((str(_int(row["person_id"]) or row["person_id"]), MedicationInput(
            name=str(row["name"]), start=lenient_date(row["start"]), stop=lenient_date(row["stop"]))))
    return out


