"""Benchmark `leukowatch screen` against a bare DuckDB floor, a pandas version and Spark.

    python bench/screen.py                 # 30M observations (750k persons x 40 results)
    python bench/screen.py --rows 3000000  # smaller
    python bench/screen.py --skip pandas,spark

Times, on one generated Parquet file: (a) `screen` end to end on DuckDB (--memory-limit 2GB, which caps
the whole process); (b) the floor: one DuckDB query grading ANC only with a CASE, written to Parquet;
(b2) a second reference: every row copied to Parquet unchanged (the cost of writing an output with one
row per result, as `graded` is); (c) pandas doing
the same outputs as a data scientist would (grade, episodes, chronic); (d) Spark local[2] on a 1/10
sample. Each runs in a fresh process; its peak memory is the high-water mark of that process and all
its children (the JVM for Spark), and its CPU seconds (all threads; not the JVM's) are printed beside
the wall time because on a shared machine wall time depends on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS_PER_DRAW = ("wbc", "neutrophils", "lymphocytes", "monocytes", "eosinophils")
DRAWS_PER_PERSON = 8
#: Seconds between memory samples of a running contender.
POLL_S = 0.2
#: Simulation shares (not clinical thresholds): persons with low counts, their low draws, %-only draws.
LOW_PERSON_SHARE, LOW_DRAW_SHARE, PERCENT_DRAW_SHARE, MALE_SHARE = 0.08, 0.6, 0.33, 0.5


def generate(path: Path, rows: int, seed: int = 1, chunk_persons: int = 50_000) -> int:
    """WBC and a differential (absolute, or % for a third of draws) for persons with 8 draws each."""
    rng = np.random.default_rng(seed)
    per_person = DRAWS_PER_PERSON * len(RESULTS_PER_DRAW)
    persons = max(1, rows // per_person)
    t0 = np.datetime64("2024-01-01T08:00:00", "s")
    writer = None
    written = 0
    for start in range(0, persons, chunk_persons):
        n = min(chunk_persons, persons - start)
        pid = np.repeat(np.arange(start, start + n), DRAWS_PER_PERSON)
        day = np.sort(rng.integers(0, 720, (n, DRAWS_PER_PERSON)), axis=1).ravel() + np.tile(
            np.arange(DRAWS_PER_PERSON), n)  # distinct days per person
        when = t0 + day.astype("timedelta64[D]")
        base = rng.lognormal(np.log(6.0), 0.45, n)  # a person's usual WBC
        low_person = rng.random(n) < LOW_PERSON_SHARE
        wbc = np.repeat(base, DRAWS_PER_PERSON) * rng.lognormal(0, 0.2, n * DRAWS_PER_PERSON)
        wbc = np.where(np.repeat(low_person, DRAWS_PER_PERSON) & (rng.random(n * DRAWS_PER_PERSON) < LOW_DRAW_SHARE),
                       wbc / 3.5, wbc)
        frac = np.stack([rng.uniform(*b, n * DRAWS_PER_PERSON) for b in
                         ((40, 70), (18, 40), (2, 9), (0.5, 5))], axis=1)
        pct_draw = rng.random(n * DRAWS_PER_PERSON) < PERCENT_DRAW_SHARE
        sexes = np.where(rng.random(n) < MALE_SHARE, "male", "female")
        birth = np.datetime64("1940-01-01") + rng.integers(0, 80 * 365, n).astype("timedelta64[D]")
        cols: dict[str, list[Any]] = {k: [] for k in ("patient_id", "time", "analyte", "value", "unit", "sex",
                                                      "birth_date")}
        pids = np.char.add("P", pid.astype(str))
        for i, analyte in enumerate(RESULTS_PER_DRAW):
            if analyte == "wbc":
                value, unit = np.round(wbc, 2), np.full(wbc.shape, "10*3/uL")
            else:
                pct = np.round(frac[:, i - 1], 1)
                value = np.where(pct_draw, pct, np.round(wbc * pct / 100, 2))
                unit = np.where(pct_draw, "%", "10*9/L")
            cols["patient_id"].append(pids)
            cols["time"].append(when)
            cols["analyte"].append(np.full(wbc.shape, analyte))
            cols["value"].append(value)
            cols["unit"].append(unit)
            cols["sex"].append(np.repeat(sexes, DRAWS_PER_PERSON))
            cols["birth_date"].append(np.repeat(birth, DRAWS_PER_PERSON))
        table = pa.table({
            "patient_id": np.concatenate(cols["patient_id"]), "time": pa.array(np.concatenate(cols["time"])),
            "analyte": np.concatenate(cols["analyte"]), "value": np.concatenate(cols["value"]),
            "unit": np.concatenate(cols["unit"]), "sex": np.concatenate(cols["sex"]),
            "birth_date": pa.array(np.concatenate(cols["birth_date"]).astype("datetime64[D]")),
        })
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1_000_000)
        written += table.num_rows
    assert writer is not None
    writer.close()
    return written


# ---------------------------------------------------------------------------------------------
# The contenders (each runs in its own process: `bench/screen.py --run NAME FILE OUT`)


def run_screen(file: Path, out: Path, engine: str) -> None:
    from leukowatch.population import screen

    screen([str(file)], out, engine=engine, memory_limit="2GB" if engine == "duckdb" else None)


def run_floor(file: Path, out: Path) -> None:
    """The floor: ANC graded by one CASE (cut-offs taken from criteria.toml), nothing else."""
    import duckdb

    from leukowatch.rules.grading import criteria_rows

    cases = " ".join(f"WHEN value < {float(r['below'])} THEN {r['grade']}"
                     for r in criteria_rows("ctcae-v5", "neutrophils", "low") if r["below"] != "LLN")
    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")
    con.execute(f"""COPY (SELECT patient_id, time, value, CASE {cases} ELSE NULL END AS grade
                    FROM read_parquet('{file}') WHERE analyte = 'neutrophils' AND unit <> '%')
                    TO '{out / "floor.parquet"}' (FORMAT parquet)""")


def run_copy(file: Path, out: Path) -> None:
    """A second reference: every input row read and written back to Parquet unchanged, nothing judged. It is
    the cost of an output with one row per result (`graded` is one, with more columns) on this machine."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"COPY (SELECT * FROM read_parquet('{file}')) TO '{out / 'copy.parquet'}' (FORMAT parquet)")


def run_pandas(file: Path, out: Path) -> None:
    """What a data scientist would write: units, % -> absolute, ranges by sex, grade, episodes, chronic."""
    import pandas as pd

    from leukowatch.rules.grading import criteria_rows
    from leukowatch.rules.ranges import profile_range
    from leukowatch.rules.timeline import chronic_rule

    df = pd.read_parquet(file)
    df["time"] = pd.to_datetime(df["time"])
    df["percent"] = df["unit"] == "%"
    wbc = df[df["analyte"] == "wbc"][["patient_id", "time", "value"]].rename(columns={"value": "wbc"})
    df = df.merge(wbc, on=["patient_id", "time"], how="left")
    df.loc[df["percent"], "value"] = df["wbc"] * df["value"] / 100
    df["age"] = (df["time"].dt.normalize() - pd.to_datetime(df["birth_date"])).dt.days / 365.25
    lows = {(a, s): profile_range("standard", a, s, 40.0).low for a in RESULTS_PER_DRAW for s in ("male", "female")}
    df["lln"] = [lows[(a, s)].value if lows[(a, s)] else None for a, s in zip(df["analyte"], df["sex"], strict=True)]
    df["low"] = df["value"] < df["lln"]
    df["grade"] = pd.NA
    for analyte in ("wbc", "neutrophils", "lymphocytes"):
        m = (df["analyte"] == analyte) & df["low"]
        for r in criteria_rows("ctcae-v5", analyte, "low"):
            below = df["lln"] if r["below"] == "LLN" else float(r["below"])
            hit = m & df["grade"].isna() & (df["value"] < below) & (df["value"] >= float(r.get("at_least", 0)))
            df.loc[hit, "grade"] = r["grade"]
    df.to_parquet(out / "graded.parquet")
    df = df.sort_values(["patient_id", "analyte", "time"])
    df["grp"] = (~df["low"]).groupby([df["patient_id"], df["analyte"]]).cumsum()
    lo = df[df["low"]]
    episodes = lo.groupby(["patient_id", "analyte", "grp"]).agg(onset=("time", "min"), last_low=("time", "max"),
                                                                nadir=("value", "min"), n_low=("value", "size"))
    episodes.to_parquet(out / "episodes.parquet")
    rule = chronic_rule()
    c = lo.groupby(["patient_id", "analyte"]).agg(n=("value", "size"), first=("time", "min"), last=("time", "max"))
    c = c[(c["n"] >= rule["min_low_results"]) & ((c["last"] - c["first"]).dt.days >= rule["min_span_days"])]
    c.to_parquet(out / "chronic.parquet")


def child(name: str, file: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if name == "screen":
        run_screen(file, out, "duckdb")
    elif name == "spark":
        run_screen(file, out, "spark")
    elif name == "floor":
        run_floor(file, out)
    elif name == "copy":
        run_copy(file, out)
    elif name == "pandas":
        run_pandas(file, out)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = None if name == "spark" else usage.ru_utime + usage.ru_stime  # Spark works in its JVM
    print(json.dumps({"seconds": seconds, "cpu_s": cpu,
                      "hwm_kb": _status_kb(os.getpid(), "VmHWM")}))


def _status_kb(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def _tree_rss_kb(root: int) -> int:
    """Resident memory of a process and every descendant (Spark's JVM, its Python workers), Linux /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _status_kb(pid, "VmRSS")
        stack += children.get(pid, [])
    return total


def measure(name: str, file: Path, out: Path) -> dict[str, float]:
    """Run one contender in a fresh process; peak memory is the larger of its own high-water mark (VmHWM:
    ru_maxrss would include the parent's memory at fork) and the polled RSS of its whole process tree."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, __file__, "--run", name, str(file), str(out)], stdout=stdout,
                                stderr=stderr, text=True)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, _tree_rss_kb(proc.pid))
            time.sleep(POLL_S)
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{stderr.read()[-3000:]}")
        r = json.loads(stdout.read().strip().splitlines()[-1])
    r["peak_mb"] = max(peak_kb, r.pop("hwm_kb")) / 1024
    return r


def _cpu(r: dict[str, Any]) -> str:
    return "-" if r.get("cpu_s") is None else f"{r['cpu_s']:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30_000_000)
    ap.add_argument("--skip", default="", help="comma list of: floor, copy, screen, pandas, spark")
    ap.add_argument("--workdir", help="where to write the data (default: a temp dir)")
    ap.add_argument("--run", nargs=3, metavar=("NAME", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        child(args.run[0], Path(args.run[1]), Path(args.run[2]))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lw-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "observations.parquet"
    t0 = time.perf_counter()
    rows = generate(data, args.rows)
    print(f"generated {rows:,} rows in {time.perf_counter() - t0:.1f} s ({data.stat().st_size / 1e6:.0f} MB)")
    sample = work / "sample.parquet"
    import duckdb

    duckdb.execute(f"COPY (SELECT * FROM read_parquet('{data}') WHERE hash(patient_id) % 10 = 0) "
                   f"TO '{sample}' (FORMAT parquet)")
    sample_rows = pq.ParquetFile(sample).metadata.num_rows
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict[str, float]] = {}
    for name in ("floor", "copy", "screen", "pandas", "spark"):
        if name in skip:
            continue
        n = sample_rows if name == "spark" else rows
        r = measure(name, sample if name == "spark" else data, work / f"out-{name}")
        r["rows"] = n
        r["rows_per_s"] = n / r["seconds"]
        results[name] = r
        print(f"{name:7s} {n:>12,} rows {r['seconds']:8.1f} s (cpu {_cpu(r)} s) "
              f"{r['rows_per_s']:>12,.0f} rows/s peak {r['peak_mb']:,.0f} MB", flush=True)
    labels = {"screen": "(a) leukowatch screen, DuckDB", "floor": "(b) bare DuckDB, ANC CASE only",
              "copy": "(b2) bare DuckDB, every row copied to Parquet",
              "pandas": "(c) pandas", "spark": "(d) leukowatch screen, Spark local[2] (1/10 sample)"}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB RAM, "
          f"Python {platform.python_version()}")
    print("| run | rows | seconds | CPU seconds | rows/s | peak memory |\n|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {labels[name]} | {r['rows']:,} | {r['seconds']:.1f} | {_cpu(r)} | {r['rows_per_s']:,.0f} | "
              f"{r['peak_mb']:,.0f} MB |")
    if "screen" in results and "floor" in results:
        print(f"\n(a)/(b) time ratio: {results['screen']['seconds'] / results['floor']['seconds']:.1f}x (goal <= 2x)")
    if "screen" in results and "copy" in results:
        print(f"(a)/(b2) time ratio: {results['screen']['seconds'] / results['copy']['seconds']:.1f}x "
              "(the output of one row per result, nothing judged)")
    if "screen" in results and "pandas" in results:
        print(f"(c)/(a) time ratio: {results['pandas']['seconds'] / results['screen']['seconds']:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
