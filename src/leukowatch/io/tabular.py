"""CSV and Parquet tables of lab results -> observations.

Columns (names configurable with `columns={"value": "RESULT", ...}`): `patient_id`, `time`,
`analyte` or `loinc`, `value`, `unit`, optional `low`, `high`, `sex`, `birth_date`. A Synthea
`observations.csv` (DATE, PATIENT, CODE, VALUE, UNITS) is recognised by its header. Every data row
is one record: accepted, or rejected naming "line N column C" with the reason. A row that repeats
an earlier one (`result.DUPLICATE_KEY`) is rejected as "duplicate of line N".
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..model import InputError, Patient
from ..request import parse_patient
from ..units import loinc_lookup
from .result import Collector, ReadResult

DEFAULT_COLUMNS: dict[str, str] = {
    "patient_id": "patient_id", "time": "time", "analyte": "analyte", "loinc": "loinc", "value": "value",
    "unit": "unit", "low": "low", "high": "high", "sex": "sex", "birth_date": "birth_date",
}
#: Known exports, recognised by their header.
PRESETS: dict[str, dict[str, str]] = {
    "synthea": {"patient_id": "PATIENT", "time": "DATE", "loinc": "CODE", "value": "VALUE", "unit": "UNITS"},
}
REQUIRED = ("patient_id", "value", "unit")


def resolve_columns(header: Iterable[str], columns: dict[str, str] | None) -> dict[str, str]:
    """Our column name -> the file's, matching case-insensitively; raises naming a missing one."""
    present = {h.strip().lower(): h for h in header if h is not None}
    wanted = dict(DEFAULT_COLUMNS)
    if not columns:
        for preset in PRESETS.values():
            if all(v.lower() in present for v in preset.values()):
                wanted = dict(preset)
                break
    wanted.update(columns or {})
    resolved = {ours: present[theirs.strip().lower()] for ours, theirs in wanted.items()
                if theirs and theirs.strip().lower() in present}
    for name in REQUIRED:
        if name not in resolved:
            raise InputError(f"column {wanted.get(name, name)}", f"missing column for {name} "
                                                                 f"(found: {', '.join(present.values())})")
    if "analyte" not in resolved and "loinc" not in resolved:
        raise InputError("column analyte", "needs an 'analyte' or a 'loinc' column")
    return resolved


def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 text ({exc.reason})") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise InputError("line 1", f"unreadable CSV header ({exc})") from None

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise InputError(f"line {reader.line_num}", f"unreadable CSV ({exc})") from None

    return list(header), rows()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...: one clean message
        raise InputError(str(path), f"not a readable Parquet file ({exc.__class__.__name__})") from None

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for batch in table.to_batches():
            for i, row in enumerate(batch.to_pylist()):
                yield i + 1, row  # "row N" (1-based) for Parquet

    return table.column_names, rows()


def read_table(path: Path, fmt: str = "csv", columns: dict[str, str] | None = None) -> ReadResult:
    header, rows = _csv_rows(path) if fmt == "csv" else _parquet_rows(path)
    cols = resolve_columns(header, columns)
    where = "line" if fmt == "csv" else "row"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    names = {f".{k}": f" column {v}" for k, v in cols.items()} | {
        ".reference_range.low": f" column {cols.get('low', 'low')}",
        ".reference_range.high": f" column {cols.get('high', 'high')}",
        ".code": f" column {cols.get('loinc', 'loinc')}"}
    col = Collector(fmt, str(path), names)
    patients: dict[str, Patient] = {}
    for number, row in rows:
        locator = f"{where} {number}"
        get = {ours: row.get(theirs) for ours, theirs in cols.items()}
        get = {k: (v.strip() if isinstance(v, str) else v) for k, v in get.items()}
        pid = str(get["patient_id"]) if get.get("patient_id") not in (None, "") else None
        if None in row:  # more cells than header names
            col.invalid(locator, f"{len(row[None])} more cells than the header has columns", row, pid)
            continue
        if pid and pid not in patients and (get.get("sex") or get.get("birth_date")):
            try:
                patient = parse_patient({"id": pid, "sex": get.get("sex") or "unknown",
                                         "birth_date": get.get("birth_date")}, locator)
                patients[pid] = patient
            except InputError as err:
                col.invalid(col.native(locator, err), err.problem, row, pid)
                continue
        obs: dict[str, Any] = {"value": get.get("value"), "unit": get.get("unit") or None}
        if get.get("loinc"):
            obs["code"] = str(get["loinc"])
        if get.get("analyte"):
            obs["analyte"] = str(get["analyte"])
        if "code" not in obs and "analyte" not in obs:
            col.invalid(locator, "no analyte or LOINC code", row, pid)
            continue
        if obs.get("code") and "analyte" not in obs and loinc_lookup(obs["code"]) is None:
            col.skip(f"{locator} column {cols['loinc']}", f"LOINC {obs['code']} is not a blood count code "
                                                          "leukowatch reads", row, pid)
            continue
        if get.get("time") not in (None, ""):
            obs["time"] = get["time"]
        rng = {side: get[side] for side in ("low", "high") if get.get(side) not in (None, "")}
        if rng:
            obs["reference_range"] = rng
        obs["source"] = f"{path.name}:{locator}"
        col.offer(obs, locator, patient_id=pid, source_key=f"{fmt}:{digest}:{number}", source_id=digest[:16],
                  line=number, raw=row)
    col.result.patients.extend(patients.values())
    return col.finish()
