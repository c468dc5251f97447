"""The bodies of `leukowatch read` and `leukowatch ingest` (cli.py only parses arguments).

Both print the reconciliation line `read N = accepted A + rejected R` for every file, because a
row that silently disappears is the failure this project exists to prevent.
"""

from __future__ import annotations

import csv
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO

from ..model import InputError
from . import read_path
from .result import ReadResult, Reject


def parse_columns(pairs: list[str] | None) -> dict[str, str] | None:
    """--column value=RESULT --column patient_id=MRN -> {"value": "RESULT", ...}."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise InputError("--column", f"expected OURS=THEIRS such as value=RESULT, got {pair!r}")
        out[ours.strip()] = theirs.strip()
    return out


def load_aliases(path: str | None) -> dict[str, str] | None:
    """A TOML alias table for local lab codes: `[aliases]` "WBC" = "wbc" (or the keys at top level)."""
    if not path:
        return None
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "alias file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a TOML alias table ({exc})") from None
    table = data.get("aliases", data)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise InputError(path, "expected code = \"analyte\" string pairs")
    return table


def _read(args: Any, file: str) -> ReadResult:
    return read_path(file, args.format, columns=parse_columns(args.column), aliases=load_aliases(args.aliases),
                     table=getattr(args, "table", None))


def write_rejects(path: str, rejects: list[tuple[str, Reject]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "locator", "kind", "reason", "raw"])
        for file, r in rejects:
            w.writerow([file, r.locator, r.kind, r.reason, r.raw])


def observation_rows(result: ReadResult) -> list[dict[str, Any]]:
    rows = []
    for item in result.items:
        o = item.observation
        rng = o.reference_range
        rows.append({
            "patient_id": o.patient_id, "time": o.time.isoformat() if o.time else None, "analyte": o.analyte,
            "value": round(o.value, 6), "unit": o.unit, "percent": o.percent, "comparator": o.comparator,
            "ref_low": None if rng is None or rng.low is None else round(rng.low, 6),
            "ref_high": None if rng is None or rng.high is None else round(rng.high, 6),
            "loinc": o.code, "original_unit": o.original_unit, "lab_flag": o.lab_flag, "status": item.status,
            "locator": item.locator,
        })
    return rows


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g}-{high:g}"
    if low is not None:
        return f">= {low:g}"
    return "" if high is None else f"<= {high:g}"


def run_read(args: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    result = _read(args, args.file)
    if args.rejects:
        write_rejects(args.rejects, [(args.file, r) for r in result.rejects])
    if args.json:
        json.dump({
            "format": result.format, "read": result.read, "accepted": result.accepted, "rejected": result.rejected,
            "patients": [{"id": p.id, "sex": p.sex, "birth_date": p.birth_date and p.birth_date.isoformat()}
                         for p in result.patients],
            "observations": observation_rows(result),
            "medications": [{"patient_id": pid, "name": m.name, "start": m.start and m.start.isoformat(),
                             "stop": m.stop and m.stop.isoformat()} for pid, m in result.medications],
            "conditions": [{"patient_id": pid, "name": c} for pid, c in result.conditions],
            "temperatures": [{"patient_id": t.patient_id, "time": t.time.isoformat(), "temperature_c": t.celsius,
                              "locator": t.locator} for t in result.temperatures],
            "rejects": [{"locator": r.locator, "kind": r.kind, "reason": r.reason} for r in result.rejects],
        }, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False, width=160 if not out.isatty() else None)
    t = Table(title=f"{args.file} ({result.format})", title_justify="left")
    for name in ("patient", "time", "analyte", "value", "unit", "range", "flag", "status", "from"):
        t.add_column(name, overflow="fold")
    for r in observation_rows(result):
        rng = _range_text(r["ref_low"], r["ref_high"])
        t.add_row(r["patient_id"] or "", r["time"] or "", r["analyte"], f"{r['comparator'] or ''}{r['value']:g}",
                  r["unit"], rng, r["lab_flag"] or "", r["status"] or "", r["locator"])
    console.print(t)
    if result.rejects:
        shown = result.rejects if args.all_rejects else [r for r in result.rejects if r.kind != "skipped"]
        if shown:
            rt = Table(title="Rejected", title_justify="left")
            for name in ("where", "kind", "reason"):
                rt.add_column(name, overflow="fold")
            for r in shown:
                rt.add_row(r.locator, r.kind, r.reason)
            console.print(rt)
        hidden = len(result.rejects) - len(shown)
        if hidden:
            console.print(f"({hidden} skipped records not shown: not blood counts, pending or cancelled; "
                          "--all-rejects lists them)")
    console.print(result.summary())
    return 0


def run_ingest(args: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .store import default_db_path, file_sha256, open_store, write_result

    db = Path(args.db) if args.db else default_db_path()
    con = open_store(db)
    failed = 0
    all_rejects: list[tuple[str, Reject]] = []
    totals = [0, 0, 0, 0]
    try:
        for file in args.files:
            try:
                path = Path(file)
                if not path.exists():
                    raise InputError(file, "file not found")
                sha = file_sha256(path) if path.is_file() else _dir_digest(path)
                result = _read(args, file)
                # Results dated beyond the store's clock skew are rejects with a reason here too, as in the
                # service and the lab feed: a future date would sort after every real result.
                summary = write_result(con, result, str(path.resolve()), sha, result.format, reject_future=True)
            except InputError as exc:
                failed += 1
                print(f"error: {exc.field}: {exc.problem} (nothing stored from {file})", file=sys.stderr)
                continue
            if summary.skipped_file:
                print(f"{file}: already ingested (same content), nothing added", file=out)
                continue
            all_rejects += [(file, r) for r in summary.rejects]
            totals = [totals[0] + summary.read, totals[1] + summary.accepted, totals[2] + summary.rejected,
                      totals[3] + summary.stored]
            print(f"{file}: read {summary.read} = accepted {summary.accepted} + rejected {summary.rejected}; "
                  f"{summary.stored} new observations stored", file=out)
        if len(args.files) > 1 and totals[0]:
            print(f"total: read {totals[0]} = accepted {totals[1]} + rejected {totals[2]}; "
                  f"{totals[3]} new observations", file=out)
        print(f"store: {db}", file=out)
    finally:
        con.close()
    if args.rejects:
        write_rejects(args.rejects, all_rejects)
    return 2 if failed else 0


def _dir_digest(folder: Path) -> str:
    """An OMOP folder's identity: the hashes of its files, so re-ingesting it adds nothing."""
    import hashlib

    from .store import file_sha256

    digest = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            digest.update(p.name.encode())
            digest.update(file_sha256(p).encode())
    return digest.hexdigest()
