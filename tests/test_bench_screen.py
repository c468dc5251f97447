"""bench/screen.py --input: the benchmark runs on a file it did not generate (a CSV without the optional
person columns here), and a contender that cannot read it is reported, not fatal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_measures_a_given_csv_without_person_columns(tmp_path: Path) -> None:
    rows = ["patient_id,time,analyte,value,unit"]
    for p in range(40):
        for d in range(5):
            when = f"2026-0{1 + d}-05T08:00:00Z"
            anc = "<0.5" if p == d == 0 else f"{0.4 + p % 4}"  # text values: every contender reads them
            rows += [f"B{p},{when},wbc,{2.5 + p % 5},10*9/L", f"B{p},{when},neutrophils,{anc},10*9/L"]
    given = tmp_path / "labs.csv"
    given.write_text("\n".join(rows) + "\n")
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "screen.py"), "--input", str(given), "--workdir",
                          str(work), "--skip", "floor,spark,spark_plain,spark_plain_all"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((work / "results.json").read_text())
    assert results["rows"] == 400 and results["shape"] == "given: labs.csv"
    assert set(results["results"]) == {"copy", "duckdb_plain", "duckdb_plain_all", "screen", "pandas"}
    assert "(a)/(b2) time ratio" in run.stdout and "(c)/(a) time ratio" in run.stdout
    # the screen read the converted file as it reads a file without sex and birth date: every row graded
    r = json.loads((work / "out-screen" / "summary.json").read_text())["reconciliation"]
    assert r["read"] == r["graded"] == 400 and r["rejected"] == 0, r
