"""Reading what labs, EHRs and warehouses send: FHIR R4, HL7 v2 ORU^R01, CSV/Parquet, OMOP CDM.

Every reader returns a `ReadResult` (accepted observations + rejects with reasons, reconciled:
read = accepted + rejected). Readers import their libraries lazily, so `leukowatch assess` on a
JSON request never loads them, and never loads duckdb or pyarrow at all.

- `read_text(text, fmt, source)` -> ReadResult for "fhir" / "hl7" (one message or bundle text).
- `read_path(path, fmt="auto", **options)` -> ReadResult for any supported file.
- `request_from_text(text, fmt, source, patient=None)` -> the project JSON request dict for `assess`.
- `request_from_path(path, fmt="auto", patient=None)` -> the same for any supported file or folder
  (CSV, Parquet and OMOP may hold many people: `patient` picks one).
- `path_format(path, fmt="auto")` -> the format `read_path` will use for a file or folder.
- `detect_format(path, head)` -> "fhir" | "hl7" | "json" | "csv" | "parquet" | "duckdb" | "omop".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..model import InputError
from .result import Item, ReadResult, Reject, to_request

__all__ = ["Item", "ReadResult", "Reject", "detect_format", "path_format", "read_path", "read_text",
           "request_from_path", "request_from_text", "FORMATS", "TABLE_FORMATS"]

FORMATS = ("auto", "fhir", "hl7", "csv", "parquet", "omop", "duckdb")
#: Formats read from a path (binary, or a folder), not from text: what `assess FILE` hands to `read_path`.
TABLE_FORMATS = ("csv", "parquet", "omop", "duckdb")


def read_text(text: str, fmt: str, source: str, aliases: dict[str, str] | None = None) -> ReadResult:
    """FHIR JSON or HL7 v2 text -> ReadResult. Raises InputError when the whole input is unreadable."""
    if fmt == "hl7":
        from .hl7v2 import read_hl7

        return read_hl7(text, source, aliases)
    if fmt == "fhir":
        from .fhir import read_fhir_json

        return read_fhir_json(text, source)
    raise InputError("--format", f"read_text reads fhir or hl7, not {fmt!r}")


def request_from_text(text: str, fmt: str, source: str, patient: str | None = None) -> dict[str, Any]:
    """What `leukowatch assess FILE` uses for FHIR and HL7: one person's results as the project
    JSON request, which `assess` then validates exactly like a hand-written request."""
    return to_request(read_text(text, fmt, source), patient)


def request_from_path(path: str | Path, fmt: str = "auto", patient: str | None = None, *,
                      columns: dict[str, str] | None = None, aliases: dict[str, str] | None = None,
                      table: str | None = None) -> dict[str, Any]:
    """`request_from_text` for any file `read_path` reads (CSV, Parquet, an OMOP folder or DuckDB
    file too). `patient` picks one person of a file that holds several; without it the file must
    hold one person, else InputError lists a few of the ids."""
    return to_request(read_path(path, fmt, columns=columns, aliases=aliases, table=table), patient)


def detect_format(path: Path, head: bytes) -> str:
    """Guess the format from the first bytes (and the suffix for binary files)."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"DUCK", 8) or path.suffix.lower() in (".duckdb", ".ddb"):
        return "duckdb"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff\x0b \r\n\t")
    if text.startswith("MSH") or text.startswith("FHS") or text.startswith("BHS"):
        return "hl7"
    if text.startswith("{"):
        return "fhir"
    if text.startswith("["):
        return "json"  # not a lab format; a JSON array is not CSV either
    first = text.splitlines()[0].lower() if text else ""
    if "measurement_concept_id" in first or "person_id" in first:
        return "omop"
    if "," in first or "\t" in first or ";" in first:
        return "csv"
    raise InputError(str(path), "unrecognised format: expected FHIR JSON, HL7 v2, CSV, Parquet or DuckDB "
                                "(use --format)")


def path_format(path: str | Path, fmt: str = "auto") -> str:
    """The format of a file or folder: `fmt` when forced, else detected (a folder is OMOP)."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(p), "file not found")
    if p.is_dir():
        if fmt in ("auto", "omop"):
            return "omop"
        raise InputError(str(p), "is a directory (only an OMOP folder can be read as a directory)")
    if fmt != "auto":
        return fmt
    with open(p, "rb") as fh:
        return detect_format(p, fh.read(4096))


def read_path(path: str | Path, fmt: str = "auto", *, columns: dict[str, str] | None = None,
              aliases: dict[str, str] | None = None, table: str | None = None) -> ReadResult:
    """Read one file of any supported format. `columns` renames tabular columns (our name -> theirs);
    `table` picks the MEASUREMENT table name in a DuckDB database."""
    p = Path(path)
    fmt = path_format(p, fmt)
    if p.is_dir():
        from .omop import read_omop

        return read_omop(p)
    if fmt in ("fhir", "hl7", "json"):
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(str(p), f"not UTF-8 text ({exc.reason})") from None
        if fmt == "json":
            fmt = "fhir" if _looks_fhir(text) else fmt
            if fmt == "json":
                raise InputError(str(p), "a project JSON request is assessed directly; `read` takes lab formats")
        return read_text(text, fmt, str(p), aliases)
    if fmt in ("csv", "parquet"):
        from .tabular import read_table

        return read_table(p, fmt, columns=columns)
    if fmt in ("omop", "duckdb"):
        from .omop import read_omop

        return read_omop(p, table=table)
    raise InputError("--format", f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _looks_fhir(text: str) -> bool:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return True  # let the FHIR reader report the JSON error with its position
    return isinstance(data, dict) and "resourceType" in data
