"""Benchmark `leukowatch screen` against the copy floor, a pandas version and a plain PySpark job.

    python bench/screen.py                          # 30M observations (750k persons x 40 results)
    python bench/screen.py --rows 3000000           # smaller; Spark on a 1/10 sample (300k)
    python bench/screen.py --rows 3000000 --spark-full --skip floor,copy,screen,pandas,duckdb_plain,duckdb_plain_all

Times, on one generated Parquet file: (a) `screen` end to end on DuckDB (--memory-limit 2GB, which caps
the whole process); (b) one DuckDB query grading ANC only with a CASE; (b2) the floor: every row copied
to Parquet unchanged (the cost of any output with one row per result, as `graded` is); (b3) a plain
DuckDB job doing what (e) does, and (b4) what (e2) does; with --parts, (p1)-(p3): the parts any screen of these outputs must do,
each alone in bare DuckDB SQL; (c) pandas doing the screen's core outputs as a data scientist would
(validation and rejects, graded, episodes, chronic); (e) a plain PySpark job (read, grade, episodes by
a window, write; results in percent dropped), (e2) the same grading every result (percent made absolute
from the draw's WBC) and (d) `screen --engine spark`, all on local[2]. Goals: (a) <= 3x (b2), (c) >= 5x
(a), (d) <= 2x (e); proposed in docs/population.md: (a) <= 3x (p1)+(p2)+(p3). Each runs in a fresh process; its
peak memory is the high-water mark of that process and all its children (the JVM for Spark), and its
CPU seconds (all threads; not the JVM's) are printed beside the wall time, with the load average,
because on a shared machine wall time depends on what else runs. The screens' per-step cost tables
(their summary.json `timings_s` and `steps_s`) follow the results.
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
#: The input shapes `--shape` generates: the analytes of each draw, and whether a third of the draws
#: report the differential in percent (the screen then derives the absolute counts).
SHAPES: dict[str, tuple[tuple[str, ...], bool]] = {
    "differential": (RESULTS_PER_DRAW, True),
    "absolute": (("wbc", "neutrophils", "lymphocytes"), False),
}
DRAWS_PER_PERSON = 8
#: Seconds between memory samples of a running contender.
POLL_S = 0.2
#: Simulation shares (not clinical thresholds): persons with low counts, their low draws, %-only draws.
LOW_PERSON_SHARE, LOW_DRAW_SHARE, PERCENT_DRAW_SHARE, MALE_SHARE = 0.08, 0.6, 0.33, 0.5


def generate(path: Path, rows: int, seed: int = 1, chunk_persons: int = 50_000, shape: str = "differential") -> int:
    """WBC and a differential (absolute, or % for a third of draws) for persons with 8 draws each; with
    shape "absolute", WBC, neutrophils and lymphocytes as absolute counts only."""
    analytes, with_percent = SHAPES[shape]
    rng = np.random.default_rng(seed)
    per_person = DRAWS_PER_PERSON * len(analytes)
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
        pct_draw = (rng.random(n * DRAWS_PER_PERSON) < PERCENT_DRAW_SHARE) & with_percent
        sexes = np.where(rng.random(n) < MALE_SHARE, "male", "female")
        birth = np.datetime64("1940-01-01") + rng.integers(0, 80 * 365, n).astype("timedelta64[D]")
        cols: dict[str, list[Any]] = {k: [] for k in ("patient_id", "time", "analyte", "value", "unit", "sex",
                                                      "birth_date")}
        pids = np.char.add("P", pid.astype(str))
        for i, analyte in enumerate(analytes):
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


def given_input(path: Path, converted: Path) -> Path:
    """`--input`: a Parquet file with every column the contenders read is measured where it is. A CSV, or a file
    without the optional `sex` and `birth_date`, is first written to `converted` (not timed), a CSV as Parquet
    and absent columns as NULL, which `screen` reads as it reads them absent; `leukowatch screen` reads a CSV
    itself too: time that directly."""
    if not path.exists():
        raise SystemExit(f"--input {path}: file not found")
    import duckdb

    reader = f"read_csv('{path}', header = true)" if path.suffix.lower() == ".csv" else f"read_parquet('{path}')"
    names = {r[0] for r in duckdb.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    absent = [f", NULL::{t} AS {c}" for c, t in (("sex", "VARCHAR"), ("birth_date", "DATE")) if c not in names]
    if not absent and reader.startswith("read_parquet"):
        return path
    duckdb.execute(f"COPY (SELECT *{''.join(absent)} FROM {reader}) TO '{converted}' (FORMAT parquet)")
    return converted


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
    """The floor: every input row read and written back to Parquet unchanged, nothing judged. It is the cost
    of any output with one row per result (`graded` is one) on this machine."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"COPY (SELECT * FROM read_parquet('{file}')) TO '{out / 'copy.parquet'}' (FORMAT parquet)")


def run_pandas(file: Path, out: Path) -> None:
    """What a data scientist would write with pandas for the screen's core outputs: rows validated (units
    from leukowatch.units, negative or unknown -> rejects with a reason), % -> absolute with the draw's WBC,
    ranges by sex and age (rules.ranges, looked up once per distinct analyte, sex and year of age), flag,
    CTCAE grade (criteria rows), graded + rejects written, episodes (islands, nadir, recovery), chronic."""
    import pandas as pd

    from leukowatch.model import InputError
    from leukowatch.rules.grading import criteria_rows
    from leukowatch.rules.ranges import profile_range
    from leukowatch.rules.timeline import chronic_rule
    from leukowatch.units import convert

    df = pd.read_parquet(file)
    # naive UTC, whatever the file held (text from a CSV: ISO 8601, with or without a zone)
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601", errors="coerce").dt.tz_localize(None)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")  # text from a CSV: what is not a number is NaN
    factors, reasons = {}, {}
    for a, u in df[["analyte", "unit"]].drop_duplicates().itertuples(index=False):
        try:
            c = convert(a, 1.0, u, "unit")
            factors[(a, u)] = (c.factor, c.percent)
        except InputError as err:
            reasons[(a, u)] = err.problem
    key = list(zip(df["analyte"], df["unit"], strict=True))
    df["factor"] = [factors.get(k, (None, None))[0] for k in key]
    df["percent"] = [bool(factors.get(k, (None, False))[1]) for k in key]
    df["reason"] = [reasons.get(k) for k in key]
    df.loc[df["reason"].isna() & df["value"].isna(), "reason"] = "value is not a number"
    df.loc[df["reason"].isna() & (df["value"] < 0), "reason"] = "value is negative"
    df.loc[df["reason"].isna() & df["time"].isna(), "reason"] = "missing or unparseable time"
    df[df["reason"].notna()].to_parquet(out / "rejects.parquet")
    df = df[df["reason"].isna()].drop(columns="reason")
    df["value"] = df["value"] * df["factor"]
    wbc = df[(df["analyte"] == "wbc") & ~df["percent"]][["patient_id", "time", "value"]]
    df = df.merge(wbc.rename(columns={"value": "wbc"}), on=["patient_id", "time"], how="left")
    df["derived"] = df["percent"]
    df.loc[df["percent"], "value"] = df["wbc"] * df["value"] / 100
    df = df[df["value"].notna()]
    born = pd.to_datetime(df["birth_date"], format="ISO8601", errors="coerce")
    df["age"] = ((df["time"].dt.normalize() - born).dt.days // 365.25).astype("Int64")
    limits: dict[tuple[str, str, int], tuple[float | None, float | None]] = {}
    for a, sx, age in df[["analyte", "sex", "age"]].drop_duplicates().itertuples(index=False):
        r = profile_range("standard", a, sx, None if pd.isna(age) else float(age))
        limits[(a, sx, age)] = (r.low.value if r.low else None, r.high.value if r.high else None)
    lh = [limits[k] for k in zip(df["analyte"], df["sex"], df["age"], strict=True)]
    df["lln"] = np.array([x[0] for x in lh], dtype=float)  # no limit (an unknown sex): NaN, never compared true
    df["uln"] = np.array([x[1] for x in lh], dtype=float)
    df["flag"] = "normal"
    df.loc[df["value"] < df["lln"], "flag"] = "low"
    df.loc[df["value"] > df["uln"], "flag"] = "high"
    df["grade"] = pd.NA
    for analyte in df["analyte"].unique():
        m = (df["analyte"] == analyte) & (df["flag"] == "low")
        for r in criteria_rows("ctcae-v5", analyte, "low"):
            below = df["lln"] if r["below"] == "LLN" else float(r["below"])
            hit = m & df["grade"].isna() & (df["value"] < below) & (df["value"] >= float(r.get("at_least", 0)))
            df.loc[hit, "grade"] = r["grade"]
    df.drop(columns=["factor", "wbc"]).to_parquet(out / "graded.parquet")
    df = df.sort_values(["patient_id", "analyte", "time"])
    low = df["flag"] == "low"
    by = [df["patient_id"], df["analyte"]]
    df["grp"] = (~low).groupby(by).cumsum()
    df["next_time"] = df.groupby(["patient_id", "analyte"])["time"].shift(-1)
    df["next_low"] = low.groupby(by).shift(-1)
    lo = df[low]
    lo = lo.assign(recovery=lo["next_time"].where(lo["next_low"] == False))  # noqa: E712 (NaN is not False)
    idx = lo.groupby(["patient_id", "analyte", "grp"])["value"].idxmin()
    episodes = lo.groupby(["patient_id", "analyte", "grp"]).agg(
        onset=("time", "min"), last_low=("time", "max"), n_low=("value", "size"), worst_grade=("grade", "max"),
        recovery=("recovery", "max"))
    episodes["nadir_value"] = lo.loc[idx.values, "value"].values
    episodes["nadir_time"] = lo.loc[idx.values, "time"].values
    episodes.reset_index().to_parquet(out / "episodes.parquet")
    rule = chronic_rule()
    c = lo.groupby(["patient_id", "analyte"]).agg(n=("value", "size"), first=("time", "min"), last=("time", "max"))
    c = c[(c["n"] >= rule["min_low_results"]) & ((c["last"] - c["first"]).dt.days >= rule["min_span_days"])]
    c.to_parquet(out / "chronic.parquet")


def plain_units(units: list[str]) -> tuple[dict[str, float], list[str]]:
    """How the plain jobs read units: each absolute spelling's factor to the canonical unit, and the percent
    spellings (leukowatch.units, asked about a differential analyte, which may come either way)."""
    from leukowatch.units import conversion

    factors: dict[str, float] = {}
    percent: list[str] = []
    for u in units:
        try:
            c = conversion("neutrophils", u, "unit")
        except Exception:  # noqa: BLE001 (a unit the plain jobs leave out)
            continue
        if c.percent:
            percent.append(u)
        else:
            factors[u] = c.factor
    return factors, percent


def run_spark_plain(file: Path, out: Path, derive: bool = False) -> None:
    """A plain PySpark job on local[2], written as a Spark developer would: read, counts in canonical units
    (unit factors from leukowatch.units), the adult LLN by sex (rules.ranges), CTCAE grade by a CASE from
    criteria.toml, write graded; episodes by a window (running count of non-low results), write.

    `derive` False (e): results in percent are dropped, as a job that knows only absolute counts would, so
    a third of the draws have no graded differential. `derive` True (e2): every result is graded, a
    differential item in percent made absolute from its draw's WBC (WBC x % / 100) by a window per draw."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from leukowatch.population.engines import spark_session
    from leukowatch.rules.grading import criteria_rows
    from leukowatch.rules.ranges import profile_range

    spark = spark_session("local[2]")
    df = spark.read.parquet(str(file))
    factors, percent = plain_units([r["unit"] for r in df.select("unit").distinct().collect()])
    factor = F.lit(None).cast("double")
    for u, f in factors.items():
        factor = F.when(F.col("unit") == u, F.lit(f)).otherwise(factor)
    value = F.col("value").cast("double") * factor  # a text value (a CSV) that is not a number is NULL
    if derive and percent:
        wbc = F.max(F.when(F.col("analyte") == "wbc", value)).over(Window.partitionBy("patient_id", "time"))
        value = F.when(F.col("unit").isin(percent), wbc * F.col("value").cast("double") / 100).otherwise(value)
    df = df.withColumn("value", value).where(F.col("value").isNotNull())
    lln = F.lit(None).cast("double")
    for a in RESULTS_PER_DRAW:
        for sx in ("male", "female"):
            r = profile_range("standard", a, sx, 40.0)
            if r.low:
                lln = F.when((F.col("analyte") == a) & (F.col("sex") == sx), F.lit(r.low.value)).otherwise(lln)
    df = df.withColumn("lln", lln).withColumn("low", F.col("value") < F.col("lln"))
    grade = F.lit(None).cast("int")
    for a in ("wbc", "neutrophils", "lymphocytes"):
        for r in reversed(criteria_rows("ctcae-v5", a, "low")):  # mildest first, so the worst wins
            below = F.col("lln") if r["below"] == "LLN" else F.lit(float(r["below"]))
            hit = (F.col("analyte") == a) & F.col("low") & (F.col("value") < below)
            if "at_least" in r:
                hit = hit & (F.col("value") >= float(r["at_least"]))
            grade = F.when(hit, F.lit(int(r["grade"]))).otherwise(grade)
    df = df.withColumn("grade", grade)
    df.write.mode("overwrite").parquet(str(out / "graded.parquet"))
    g = spark.read.parquet(str(out / "graded.parquet"))
    w = Window.partitionBy("patient_id", "analyte").orderBy("time")
    g = g.withColumn("grp", F.sum((~F.col("low")).cast("int")).over(w))
    e = g.where("low").groupBy("patient_id", "analyte", "grp").agg(
        F.min("time").alias("onset"), F.max("time").alias("last_low"), F.min("value").alias("nadir"),
        F.count("*").alias("n_low"), F.max("grade").alias("worst_grade"))
    e.write.mode("overwrite").parquet(str(out / "episodes.parquet"))


def run_duckdb_plain(file: Path, out: Path, derive: bool = False) -> None:
    """(b3) in DuckDB SQL: the same plain job as `run_spark_plain` (counts in canonical units, the adult LLN by
    sex, CTCAE grade by a CASE, graded written; episodes by a window over every series, written), so that
    DuckDB's screen has a floor that does the same kind of work, as Spark's has; `derive` as there (b4)."""
    import duckdb

    from leukowatch.rules.grading import criteria_rows
    from leukowatch.rules.ranges import profile_range

    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")
    con.execute("SET preserve_insertion_order = false")
    src = f"read_parquet('{file}')"
    factors, percent = plain_units([u for (u,) in con.execute(f"SELECT DISTINCT unit FROM {src}").fetchall()])
    number = "TRY_CAST(value AS DOUBLE)"  # a text value (a CSV) that is not a number is NULL
    value = f"{number} * CASE {' '.join(f'WHEN unit = {u!r} THEN {f!r}' for u, f in factors.items())} END"
    if derive and percent:
        wbc = f"max(CASE WHEN analyte = 'wbc' THEN {value} END) OVER (PARTITION BY patient_id, time)"
        value = f"CASE WHEN unit IN ({', '.join(map(repr, percent))}) THEN {wbc} * {number} / 100 ELSE {value} END"
    lln = [f"WHEN analyte = '{a}' AND sex = '{sx}' THEN {r.low.value!r}" for a in RESULTS_PER_DRAW
           for sx in ("male", "female") if (r := profile_range("standard", a, sx, 40.0)).low]
    grade = []
    for a in ("wbc", "neutrophils", "lymphocytes"):
        for r in criteria_rows("ctcae-v5", a, "low"):  # worst first: the first that holds wins
            below = "lln" if r["below"] == "LLN" else repr(float(r["below"]))
            floor = f" AND value >= {float(r['at_least'])!r}" if "at_least" in r else ""
            grade.append(f"WHEN analyte = '{a}' AND low AND value < {below}{floor} THEN {int(r['grade'])}")
    con.execute(f"""COPY (
        SELECT *, CASE {' '.join(grade)} END AS grade FROM (
            SELECT *, value < lln AS low FROM (
                SELECT patient_id, time, analyte, {value} AS value, sex, CASE {' '.join(lln)} END AS lln
                FROM {src}) WHERE value IS NOT NULL))
        TO '{out / "graded.parquet"}' (FORMAT parquet)""")
    con.execute(f"""COPY (
        SELECT patient_id, analyte, grp, min(time) AS onset, max(time) AS last_low, min(value) AS nadir,
               count(*) AS n_low, max(grade) AS worst_grade
        FROM (SELECT *, sum((NOT low)::INT) OVER (PARTITION BY patient_id, analyte ORDER BY time) AS grp
              FROM read_parquet('{out / "graded.parquet"}'))
        WHERE low GROUP BY patient_id, analyte, grp)
        TO '{out / "episodes.parquet"}' (FORMAT parquet)""")


#: The parts every screen of this input must do, each in bare DuckDB SQL on the same file (`--parts`): what
#: `graded` costs to write (one row per result, its 13 columns), the draw aggregation that derives counts
#: from percentages (2M groups at 10M rows), and the episode window over every series. Their sum against the
#: copy shows how far below a ratio any implementation of these outputs can go on this machine.
PART_QUERIES: dict[str, str] = {
    "part_graded_shape": """COPY (SELECT patient_id, time, analyte, value, FALSE AS derived, NULL::DOUBLE AS percent,
        NULL::VARCHAR AS comparator, CASE WHEN value < 1 THEN 'low' ELSE 'normal' END AS flag, 1.0 AS low,
        10.0 AS high, 7 AS range_id, CASE WHEN value < 1 THEN 'neutropenia' END AS finding,
        CASE WHEN value < 0.5 THEN 4 END AS grade FROM read_parquet('{file}')) TO '{out}/graded.parquet'
        (FORMAT parquet, COMPRESSION zstd)""",
    "part_draws": """CREATE TABLE draws AS SELECT patient_id, time, count(*) AS n,
        max(value) FILTER (WHERE analyte = 'wbc') AS wbc,
        max(value) FILTER (WHERE analyte = 'neutrophils' AND unit = '%') AS pct_neutrophils,
        max(value) FILTER (WHERE analyte = 'lymphocytes' AND unit = '%') AS pct_lymphocytes,
        max(value) FILTER (WHERE analyte = 'monocytes' AND unit = '%') AS pct_monocytes,
        max(value) FILTER (WHERE analyte = 'eosinophils' AND unit = '%') AS pct_eosinophils
        FROM read_parquet('{file}') GROUP BY patient_id, time""",
    "part_episodes": """COPY (SELECT patient_id, analyte, grp, min(time) AS onset, max(time) AS last_low,
        min(value) AS nadir, count(*) AS n_low FROM (
            SELECT *, sum((NOT low)::INT) OVER (PARTITION BY patient_id, analyte ORDER BY time) AS grp
            FROM (SELECT patient_id, analyte, time, value, value < 1.5 AS low FROM read_parquet('{file}')))
        WHERE low GROUP BY ALL) TO '{out}/episodes.parquet' (FORMAT parquet)""",
}


def run_part(name: str, file: Path, out: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(PART_QUERIES[name].format(file=file, out=out))


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
    elif name in ("spark_plain", "spark_plain_all"):
        run_spark_plain(file, out, derive=name.endswith("_all"))
    elif name in ("duckdb_plain", "duckdb_plain_all"):
        run_duckdb_plain(file, out, derive=name.endswith("_all"))
    elif name in PART_QUERIES:
        run_part(name, file, out)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = None if name.startswith("spark") else usage.ru_utime + usage.ru_stime  # Spark works in its JVM
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
    ap.add_argument("--skip", default="",
                    help="comma list of: floor, copy, duckdb_plain, duckdb_plain_all, screen, pandas, spark_plain, "
                         "spark_plain_all, spark")
    ap.add_argument("--spark-full", action="store_true", help="Spark on every row (default: a 1/10 sample)")
    ap.add_argument("--workdir", help="where to write the data (default: a temp dir)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="differential",
                    help="the input generated: WBC and a 4-part differential, a third of draws in percent "
                         "(default), or WBC, neutrophils and lymphocytes as absolute counts only")
    ap.add_argument("--input", help="an observations file to measure on instead of a generated one (Parquet with "
                    "the columns of docs/population.md; a CSV is converted to Parquet first, not timed)")
    ap.add_argument("--parts", action="store_true",
                    help="also time the parts any screen of these outputs must do, in bare DuckDB SQL")
    ap.add_argument("--run", nargs=3, metavar=("NAME", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        child(args.run[0], Path(args.run[1]), Path(args.run[2]))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lw-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    import duckdb

    data = work / "observations.parquet"
    t0 = time.perf_counter()
    if args.input:
        data, shape = given_input(Path(args.input), data), f"given: {Path(args.input).name}"
        rows = pq.ParquetFile(data).metadata.num_rows
        print(f"{rows:,} rows from {args.input} ({data.stat().st_size / 1e6:.0f} MB)")
    else:
        rows, shape = generate(data, args.rows, shape=args.shape), args.shape
        print(f"generated {rows:,} rows ({shape} input) in {time.perf_counter() - t0:.1f} s "
              f"({data.stat().st_size / 1e6:.0f} MB)")
    sample = work / "sample.parquet"

    duckdb.execute(f"COPY (SELECT * FROM read_parquet('{data}') WHERE hash(patient_id) % 10 = 0) "
                   f"TO '{sample}' (FORMAT parquet)")
    sample_rows = pq.ParquetFile(sample).metadata.num_rows
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict[str, float]] = {}
    spark_file = data if args.spark_full else sample
    parts = tuple(PART_QUERIES) if args.parts else ()
    for name in ("floor", "copy", *parts, "duckdb_plain", "duckdb_plain_all", "screen", "pandas", "spark_plain",
                 "spark_plain_all", "spark"):
        if name in skip:
            continue
        spark = name.startswith("spark")
        n = (rows if args.spark_full else sample_rows) if spark else rows
        try:
            r = measure(name, spark_file if spark else data, work / f"out-{name}")
        except RuntimeError as failed:  # a contender that cannot read a given input: said, the others still run
            lines = str(failed).strip().splitlines()
            why = next((x for x in reversed(lines) if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", x)), lines[-1])
            print(f"{name:11s} failed: {why}", flush=True)
            continue
        r["rows"] = n
        r["rows_per_s"] = n / r["seconds"]
        results[name] = r
        print(f"{name:11s} {n:>12,} rows {r['seconds']:8.1f} s (cpu {_cpu(r)} s) "
              f"{r['rows_per_s']:>12,.0f} rows/s peak {r['peak_mb']:,.0f} MB load {os.getloadavg()[0]:.1f}", flush=True)
    sampled = "" if args.spark_full else " (1/10 sample)"
    labels = {"screen": "(a) leukowatch screen, DuckDB --memory-limit 2GB", "floor": "(b) bare DuckDB, ANC CASE only",
              "copy": "(b2) bare DuckDB, every row copied to Parquet (the floor)",
              "duckdb_plain": "(b3) plain DuckDB job: read, grade, episodes by a window, write (as (e))",
              "duckdb_plain_all": "(b4) (b3) grading every result: counts in percent made absolute (as (e2))",
              "part_graded_shape": "(p1) part: write a graded-shaped file (13 columns, a row per result)",
              "part_draws": "(p2) part: aggregate every draw (WBC and percentages, to derive counts)",
              "part_episodes": "(p3) part: the episode window over every series",
              "pandas": "(c) pandas: validate + rejects, graded, episodes, chronic",
              "spark_plain": f"(e) plain PySpark job: read, grade, episodes by a window, write{sampled}",
              "spark_plain_all": f"(e2) (e) grading every result: counts in percent made absolute from the draw's "
                                 f"WBC by a window per draw{sampled}",
              "spark": f"(d) leukowatch screen, Spark local[2]{sampled}"}
    load = os.getloadavg()
    summary = {"rows": rows, "shape": shape, "load": load[0], "results": results}
    (work / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB RAM, "
          f"Python {platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          "(a shared machine: compare the ratios of one run)")
    print("| run | rows | seconds | CPU seconds | rows/s | peak memory |\n|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {labels[name]} | {r['rows']:,} | {r['seconds']:.1f} | {_cpu(r)} | {r['rows_per_s']:,.0f} | "
              f"{r['peak_mb']:,.0f} MB |")
    print()
    for a, b, goal, what in (("screen", "copy", "<= 3x", "(a)/(b2)"),
                             ("screen", "duckdb_plain", "none: the plain job does less, as (e) does", "(a)/(b3)"),
                             ("duckdb_plain", "copy", "none: what the plain job alone costs", "(b3)/(b2)"),
                             ("pandas", "screen", ">= 5x", "(c)/(a)"),
                             ("screen", "duckdb_plain_all", "none", "(a)/(b4)"),
                             ("spark", "spark_plain", "<= 2x", "(d)/(e)"),
                             ("spark", "spark_plain_all", "<= 2x", "(d)/(e2)")):
        if a in results and b in results:
            print(f"{what} time ratio: {results[a]['seconds'] / results[b]['seconds']:.1f}x (goal {goal})")
    if all(p in results for p in PART_QUERIES) and "copy" in results:
        floor = sum(results[p]["seconds"] for p in PART_QUERIES)
        line = (f"(p1)+(p2)+(p3) = {floor:.1f} s = {floor / results['copy']['seconds']:.1f}x the copy: the least "
                "any screen writing these outputs spends (each part alone, nothing judged)")
        if "screen" in results:
            line += f"; (a) is {results['screen']['seconds'] / floor:.1f}x that (proposed goal <= 3x)"
        print(line)
    for name in ("screen", "spark"):
        summary = work / f"out-{name}" / "summary.json"
        if name in results and summary.exists():
            s = json.loads(summary.read_text())
            print(f"\nper-step cost, {labels[name]} ({s.get('buckets', 1)} bucket(s)):\n| step | seconds |\n|---|---:|")
            for step, sec in {**s["timings_s"], **s.get("steps_s", {})}.items():
                print(f"| {step} | {sec:.2f} |")


if __name__ == "__main__":
    main()
