"""Per-assessment time in-process, and CLI start-up beyond bare Python.

Goals (issue 2): median < 100 us per assessment of a full CBC with 5 medicines; `leukowatch assess`
start-up < 150 ms beyond `python -c pass`. Reference implementations: the same request through
`assess()` with the request already parsed (the floor: rules only), the same request with other
values each call (per-value caches missing, as for a service), and bare CPython start-up.

The goals are judged on the wall-clock medians; the CPU column (this thread's processor time per
call) shows how much of a slow run was waiting for the machine rather than work.

    python bench/assess.py [--n 20000] [--starts 15]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fixtures import FULL_CBC

from leukowatch.assess import assess
from leukowatch.request import parse_request

REQUEST = FULL_CBC


def per_assessment(n: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(wall, CPU) medians in microseconds, for the request dict and for the parsed request.

    CPU is this thread's processor time: on a shared machine it leaves out the time spent waiting
    for a core, though not a neighbour slowing the core down."""
    parsed = parse_request(REQUEST)
    assess(REQUEST)  # warm caches (tables, indexes)
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    full, full_cpu, rules, rules_cpu = [], [], [], []
    for _ in range(n):
        c0, t0 = cpu(), wall()
        assess(REQUEST)
        t1, c1 = wall(), cpu()
        c2, t2 = cpu(), wall()
        assess(parsed)
        t3, c3 = wall(), cpu()
        full.append(t1 - t0)
        full_cpu.append(c1 - c0)
        rules.append(t3 - t2)
        rules_cpu.append(c3 - c2)

    def us(xs: list[int]) -> float:
        return statistics.median(xs) / 1000

    return (us(full), us(full_cpu)), (us(rules), us(rules_cpu))


def varied(n: int) -> tuple[float, float]:
    """(wall, CPU) medians in microseconds over n requests like REQUEST but each with other values
    (seeded), each assessed once: what a service sees. Some results are cached per value, as lab
    values repeat; this shows the cost when those caches miss. Each request is built just before it
    is timed, as a service's freshly parsed JSON would be."""
    rnd = random.Random(2)
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    times, cpu_times = [], []
    for _ in range(n):
        request = copy.deepcopy(REQUEST)
        for obs in request["observations"]:
            obs["value"] = round(obs["value"] * rnd.uniform(0.5, 1.5), 2)
        request["patient"]["age_years"] = rnd.randint(18, 90)
        c0, t0 = cpu(), wall()
        assess(request)
        t1, c1 = wall(), cpu()
        times.append(t1 - t0)
        cpu_times.append(c1 - c0)
    return statistics.median(times) / 1000, statistics.median(cpu_times) / 1000


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
    (full, full_cpu), (rules, rules_cpu) = per_assessment(args.n)
    other, other_cpu = varied(args.n)
    cli, bare = startup(args.starts)
    rows = [
        ("assess(request dict), full CBC + 5 medicines", f"{full:.1f} us", f"{full_cpu:.1f} us", "< 100 us"),
        ("  reference: assess(parsed Request), rules only", f"{rules:.1f} us", f"{rules_cpu:.1f} us", ""),
        ("  reference: other values each call", f"{other:.1f} us", f"{other_cpu:.1f} us", ""),
        ("leukowatch assess FILE --json (wall)", f"{cli:.0f} ms", "", ""),
        ("  reference: python -c pass", f"{bare:.0f} ms", "", ""),
        ("CLI start-up beyond bare Python", f"{cli - bare:.0f} ms", "", "< 150 ms"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>10}  {'CPU':>10}  goal")
    for name, value, cpu, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {cpu:>10}  {goal}")


if __name__ == "__main__":
    main()
