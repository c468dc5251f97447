"""`leukowatch demo generate` and `leukowatch validate`: the command bodies (cli.py stays thin)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ..model import InputError


def generate_command(persons: int, seed: int, outdir: str, subset: int) -> dict[str, Any]:
    """Generate and write the demo set; prints one summary line per file group."""
    from .export import write_demo
    from .generate import generate

    if persons < 1:
        raise InputError("--persons", "must be at least 1")
    t0 = time.perf_counter()
    pop = generate(persons, seed)
    timings = {"draws": time.perf_counter() - t0}
    manifest = write_demo(pop, outdir, subset, timings)
    total = time.perf_counter() - t0
    made = timings["draws"] + timings["rows"]
    obs = manifest["observations"]
    print(f"{manifest['persons']:,} persons (seed {seed}), {obs['rows']:,} observations "
          f"({obs['dirty']:,} dirty rows injected): generated in {made:.2f} s "
          f"({obs['rows'] / made:,.0f} observations/s), written in {total - made:.2f} s -> {outdir}")
    print("scenarios: " + ", ".join(f"{k} {v}" for k, v in manifest["scenarios"].items()))
    print("files: " + ", ".join(f"{k} {v:,}" for k, v in manifest["files"].items()))
    return manifest


def screened_flags(demo_dir: Path, engine: str) -> tuple[dict[str, Any], str]:
    """The flags table of a screen of the demo set (`engine` duckdb/spark) or of the per-patient engine."""
    if engine == "assess":
        from .validate import flags_from_assess

        flags, counts = flags_from_assess(demo_dir)
        line = f"read {counts['read']:,} = accepted {counts['accepted']:,} + rejected {counts['rejected']:,}"
        return {"flags": flags}, line
    from ..population import screen

    inputs = [str(demo_dir / name) for name in ("observations.parquet", "medications.parquet",
                                                "temperatures.parquet") if (demo_dir / name).exists()]
    with tempfile.TemporaryDirectory(prefix="leukowatch-validate-") as tmp:
        result = screen(inputs, tmp, engine=engine)
        return {"flags": result.table("flags")}, result.reconciliation_line


def validate_command(demo_dir: str, engine: str, as_json: bool, show: int) -> int:
    """Screen the demo set, compare with truth.parquet, print the table (or JSON) and mismatches."""
    from .validate import validate

    d = Path(demo_dir)
    truth = d / "truth.parquet"
    if not truth.exists():
        raise InputError(demo_dir, "no truth.parquet here: generate one with `leukowatch demo generate -o DIR`")
    manifest_path = d / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    t0 = time.perf_counter()
    screened, reconciliation = screened_flags(d, engine)
    report = validate(truth, screened)
    elapsed = time.perf_counter() - t0
    if as_json:
        print(json.dumps(report.to_dict() | {"engine": engine, "reconciliation": reconciliation,
                                             "dirty_rows": manifest.get("dirty_rows")}, indent=2))
        return 0
    print(f"validation of {demo_dir} ({report.persons:,} persons) with engine {engine} in {elapsed:.1f} s")
    print(reconciliation + (f"; dirty rows injected: {manifest['dirty_rows']['total']:,}"
                            if "dirty_rows" in manifest else ""))
    print()
    print(report.table())
    if report.mismatches:
        print()
        print(f"{len(report.mismatches):,} mismatches by scenario: " + "; ".join(
            f"{sc}: " + ", ".join(f"{f} {n}" for f, n in fs.items()) for sc, fs in sorted(report.by_scenario.items())))
        for m in report.mismatches[:show]:
            print(f"  {m.patient_id} ({m.scenario}): {m.finding} expected {m.expected}, screened {m.screened}")
        if len(report.mismatches) > show:
            print(f"  ... {len(report.mismatches) - show:,} more (--mismatches N, or --json)")
    return 0


def load_command(demo_dir: str, db: str | None) -> int:
    """Load a generated demo set into the store: lab results through the ingest path (so the dirty
    rows end in rejects), then what lab files cannot carry (Duffy status, medicines with dates,
    chemotherapy doses, conditions, measured temperatures: everything `validate` screens, so a screen of
    the store finds what a screen of the demo files finds). Idempotent: loading twice adds nothing."""
    import pyarrow.parquet as pq

    from ..io import read_path
    from ..io.store import file_sha256, open_store, store_facts, store_request, write_result
    from .named import named_patients

    d = Path(demo_dir)
    observations = d / "observations.parquet"
    if not observations.exists():
        raise InputError(demo_dir, "no observations.parquet here: generate one with `leukowatch demo generate -o DIR`")
    con = open_store(db)
    try:
        result = read_path(observations, "parquet")
        summary = write_result(con, result, str(observations), file_sha256(observations), "parquet")

        def rows(name: str, columns: list[str]) -> list[list[Any]]:
            path = d / name
            if not path.exists():
                return []
            table = pq.read_table(path, columns=columns).to_pylist()
            return [[r[c] for c in columns] for r in table]

        persons = rows("persons.parquet", ["patient_id", "duffy_null"])
        store_facts(con, str(d), duffy_null=[pid for pid, duffy in persons if duffy],
                    medications=rows("medications.parquet", ["patient_id", "name", "start", "stop"]),
                    chemotherapy=rows("chemotherapy.parquet", ["patient_id", "dose_date", "regimen"]),
                    conditions=rows("conditions.parquet", ["patient_id", "name"]),
                    temperatures=rows("temperatures.parquet", ["patient_id", "time", "temperature_c"]))
        named = [store_request(con, r, "leukowatch.demo.named") for r in named_patients()]
    finally:
        con.close()
    if summary.skipped_file:
        print(f"{observations}: already loaded, nothing added")
    else:
        print(f"{observations}: read {summary.read:,} = accepted {summary.accepted:,} + rejected "
              f"{summary.rejected:,}; {summary.stored:,} observations stored")
    print(f"named patients (demo-cloz, demo-cyclic, demo-2y, demo-amox): {sum(n.stored for n in named):,} "
          "new observations stored")
    return 0
