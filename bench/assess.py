"""Per-assessment time in-process, and CLI start-up beyond bare Python.

Goals (issue 2): median < 100 us per assessment of a full CBC with 5 medicines; `leukowatch assess`
start-up < 150 ms beyond `python -c pass`. Reference implementations: the same request through
`assess()` with the request already parsed (the floor: rules only), and bare CPython start-up.

    python bench/assess.py [--n 20000] [--starts 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fixtures import FULL_CBC

from leukowatch.assess import assess
from leukowatch.request import parse_request

REQUEST = FULL_CBC


def per_assessment(n: int) -> tuple[float, float]:
    parsed = parse_request(REQUEST)
    assess(REQUEST)  # warm caches (tables, indexes)
    full, rules = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        assess(REQUEST)
        t1 = time.perf_counter_ns()
        assess(parsed)
        t2 = time.perf_counter_ns()
        full.append(t1 - t0)
        rules.append(t2 - t1)
    return statistics.median(full) / 1000, statistics.median(rules) / 1000


def startup(starts: int) -> tuple[float, float]:
    example = Path(__file__).resolve().parents[1] / "src" / "leukowatch" / "examples" / "febrile-neutropenia.json"
    cli = [sys.executable, "-c", "import sys; from leukowatch.cli import main; sys.exit(main(sys.argv[1:]))",
           "assess", str(example), "--json"]
    bare = [sys.executable, "-c", "pass"]

    # A normal install caches bytecode; some sandboxes set PYTHONDONTWRITEBYTECODE, which would make
    # every start recompile the package and measure the compiler instead of leukowatch.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(starts):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    best(cli)  # warm the knowledge cache and bytecode
    return best(cli), best(bare)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--starts", type=int, default=15)
    args = ap.parse_args()
    full, rules = per_assessment(args.n)
    cli, bare = startup(args.starts)
    rows = [
        ("assess(request dict), full CBC + 5 medicines", f"{full:.1f} us", "< 100 us"),
        ("  reference: assess(parsed Request), rules only", f"{rules:.1f} us", ""),
        ("leukowatch assess FILE --json (wall)", f"{cli:.0f} ms", ""),
        ("  reference: python -c pass", f"{bare:.0f} ms", ""),
        ("CLI start-up beyond bare Python", f"{cli - bare:.0f} ms", "< 150 ms"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>10}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {goal}")


if __name__ == "__main__":
    main()
