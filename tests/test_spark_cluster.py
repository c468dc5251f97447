"""`leukowatch screen --engine spark` on a real standalone Spark cluster: a master and two workers started
from the pyspark distribution on 127.0.0.1, the CLI as a user runs it, the same verdicts as DuckDB.

The cluster is real (its own JVMs, executors on the workers writing the output parts in parallel); only its
size is small (one core and 1 GB per worker). Every process the test starts is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from leukowatch.population import screen

pytestmark = pytest.mark.spark

#: Seconds a cluster gets to start (JVM start-up on a loaded 2-core CI machine) and a screen to run.
START_S, SCREEN_S = 90, 420  # the screen takes 1-2 minutes; 240 s ran out once beside a Spark benchmark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spark_home() -> Path:
    pyspark = pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no JDK")
    return Path(pyspark.__file__).parent


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark://127.0.0.1:PORT with two registered workers; the JVMs are stopped afterwards."""
    home = _spark_home()
    work = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(work),
           "SPARK_WORKER_DIR": str(work / "worker"), "PYSPARK_PYTHON": sys.executable}
    port, ui = _free_port(), _free_port()
    spark_class = str(home / "bin" / "spark-class")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str) -> None:
        with open(work / log, "wb") as out:
            procs.append(subprocess.Popen([spark_class, *args], env=env, stdout=out, stderr=subprocess.STDOUT))

    try:
        start("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui), log="master.log")
        master = f"spark://127.0.0.1:{port}"
        for i in range(2):
            start("org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(_free_port()),
                  "--webui-port", str(_free_port()), "--cores", "1", "--memory", "1g",
                  "--work-dir", str(work / f"worker{i}"), master, log=f"worker{i}.log")
        deadline = time.monotonic() + START_S
        while _alive_workers(ui) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join((work / f).read_text(errors="replace")[-1500:] for f in
                                 ("master.log", "worker0.log", "worker1.log") if (work / f).exists())
                pytest.fail(f"the standalone cluster did not start:\n{logs}")
            time.sleep(1)
        yield master
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


CSV = """patient_id,time,analyte,value,unit
C1,2026-01-05T09:00:00Z,wbc,2.1,10*9/L
C1,2026-01-05T09:00:00Z,neutrophils,20,%
C1,2026-02-05T09:00:00Z,neutrophils,0.4,10*9/L
C1,2026-05-05T09:00:00Z,neutrophils,0.8,10*9/L
C1,2026-06-05T09:00:00Z,neutrophils,2.4,10*9/L
C2,2026-01-05T09:00:00Z,wbc,7.5,10*9/L
C2,2026-01-05T09:00:00Z,lymphocytes,0.3,10*9/L
C2,2026-01-05T09:00:00Z,lymphocytes,0.35,10*9/L
C3,2026-01-05T09:00:00Z,wbc,-1,10*9/L
"""


def _verdicts(out: Path) -> dict[str, set[tuple[Any, ...]]]:
    def rows(name: str) -> list[dict[str, Any]]:
        return pq.read_table(out / f"{name}.parquet").to_pylist()

    return {
        "graded": {(r["patient_id"], r["time"], r["analyte"], round(r["value"], 9), r["flag"], r["finding"],
                    r["grade"]) for r in rows("graded")},
        "episodes": {(r["patient_id"], r["analyte"], r["onset"], r["n_low"], r["worst_grade"], r["recovery"])
                     for r in rows("episodes")},
        "chronic": {(r["patient_id"], r["analyte"], r["n_low"]) for r in rows("chronic")},
        "flags": {tuple(sorted(r.items())) for r in rows("flags")},
        "rejects": {(r["patient_id"], r["reason_code"]) for r in rows("rejects")},
    }


def test_cluster_screen_matches_duckdb(cluster: str, tmp_path: Path) -> None:
    """A demo population (with medicines and temperatures) plus a CSV without the optional columns, a
    superseded duplicate and a rejected row: the cluster's outputs equal DuckDB's, written in parts."""
    from leukowatch.demo import generate
    from leukowatch.demo.export import write_demo

    data = tmp_path / "data"
    write_demo(generate(250, 3), data, subset_size=0)
    (data / "extra.csv").write_text(CSV)
    inputs = [str(data / n) for n in ("observations.parquet", "extra.csv", "medications.parquet",
                                      "temperatures.parquet")]
    duck = screen(inputs, tmp_path / "duckdb")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_SUBMIT_ARGS": "--conf spark.executor.memory=768m --conf spark.executor.cores=1 pyspark-shell"}
    run = subprocess.run([sys.executable, "-m", "leukowatch.cli", "screen", *inputs, "-o", str(tmp_path / "spark"),
                          "--engine", "spark", "--spark-master", cluster], env=env, capture_output=True, text=True,
                         timeout=SCREEN_S)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "spark" / "summary.json").read_text())
    assert summary["engine"] == "spark" and summary["reconciliation"] == duck.reconciliation
    assert duck.reconciliation["rejected"] >= 2  # the negative count and the superseded lymphocyte result
    spark, local = _verdicts(tmp_path / "spark"), _verdicts(tmp_path / "duckdb")
    for key in local:
        assert spark[key] == local[key], key
    assert any(dict(f)["febrile_neutropenia"] for f in local["flags"])
    # the executors on both workers wrote their parts of the long outputs side by side
    assert len(list((tmp_path / "spark" / "graded.parquet").glob("part-*.parquet"))) >= 2
