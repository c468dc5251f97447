"""Lab-feed throughput: messages/s and ACK latency (p50/p99) for a stream of CBC messages, judging on.

Goal (issue 13): >= 500 messages/s and p99 ACK < 50 ms on 2 cores, with judging on. A real
`leukowatch listen` runs as a subprocess on a fresh store; python-hl7's asyncio MLLP client sends
each connection's messages one at a time, each after the previous ACK (as an interface engine
does), over `--connections` connections at once. Latency is send-to-ACK per message; messages/s is
all ACKed messages over the wall time of the stream. The client runs on the same machine, so it
takes its share of the cores.

Judging runs behind the ACKs (the inbox is the queue): the last lines say how far it had got when
the stream ended and how long the graceful stop took to judge the rest, i.e. the judging rate.
"CPU ms/msg" is the listener process's CPU time (all threads, start-up and the judging of the
backlog included) per message: what the feed costs, whatever the neighbours are doing; "no start"
is the same without the listener's start-up (imports, opening the store: about a second, read
from /proc when it says it is listening), what a long-running feed pays per message; "client" is
the benchmark client's own CPU per message, taken from the same cores.

Reference row: the same stream with the inbox commit only (`--no-judge` is not offered by the
listener, so the reference is the ACK rate of a stream whose messages are all rejected AE before
judging: same framing, parsing and group commit, no judging work).

    python bench/mllp.py [--messages 2000] [--connections 5] [--patients 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from hl7.mllp import open_hl7_connection


def cbc(control_id: str, patient: str, day: int, anc: float, with_pid: bool = True) -> str:
    when = f"202611{1 + day % 28:02d}0800"
    segments = [f"MSH|^~\\&|LABSYS|CITYLAB|LEUKOWATCH|WARD|{when}||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
                f"PID|1||{patient}^^^CITYLAB^MR||DOE^ALEX||19700101|F",
                f"OBR|1|O{control_id}|F{control_id}|58410-2^CBC^LN|||{when}",
                f"OBX|1|NM|6690-2^WBC^LN||{round(anc * 1.8 + 1, 1)}|10*9/L|4.0-11.0||||F|||{when}",
                f"OBX|2|NM|751-8^ANC^LN||{anc}|10*9/L|1.5-7.5||||F|||{when}",
                f"OBX|3|NM|731-0^Lymphocytes^LN||1.6|10*9/L|1.0-4.0||||F|||{when}",
                f"OBX|4|NM|718-7^Hemoglobin^LN||12.9|g/dL|12.0-16.0||||F|||{when}",
                f"OBX|5|NM|777-3^Platelets^LN||210|10*9/L|150-400||||F|||{when}"]
    if not with_pid:
        segments.pop(1)
    return "\r".join(segments)


async def stream(port: int, messages: list[str], latencies: list[float]) -> int:
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    accepted = 0
    try:
        for message in messages:
            start = time.perf_counter()
            writer.writemessage(message)
            await writer.drain()
            ack = await reader.readmessage()
            latencies.append(time.perf_counter() - start)
            accepted += str(ack.segment("MSA")(1)) in ("AA", "AE")
    finally:
        writer.close()
    return accepted


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
    """CPU seconds a running process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(n: int, connections: int, patients: int, with_pid: bool) -> dict[str, float]:
    cpu_before = _children_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        proc = subprocess.Popen([sys.executable, "-m", "leukowatch.cli", "listen", "--db", str(db), "--port", "0",
                                 "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        port = 0
        while not port:
            line = proc.stderr.readline()
            if not line:
                raise SystemExit(f"listener exited: {proc.wait()}")
            if m := re.search(r"listening on [\d.]+:(\d+)", line):
                port = int(m.group(1))
        startup_cpu = _process_cpu(proc.pid)
        per = [[cbc(f"B{c}-{i}", f"BP{(c * n // connections + i) % patients}", i, round(0.2 + (i * 7 % 40) / 10, 1),
                    with_pid) for i in range(n // connections)] for c in range(connections)]
        latencies: list[float] = []

        async def all_streams() -> list[int]:
            return await asyncio.gather(*(stream(port, msgs, latencies) for msgs in per))

        start, client_cpu = time.perf_counter(), time.process_time()
        answered = sum(asyncio.run(all_streams()))
        wall = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        stop = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=600)
        drain = time.perf_counter() - stop
        con = duckdb.connect(str(db), read_only=True)
        judged, stored = con.execute("SELECT (SELECT judged_upto FROM feed_progress), "
                                     "(SELECT count(*) FROM feed_inbox WHERE status = 'stored')").fetchone()
        con.close()
    latencies.sort()
    cpu_s = _children_cpu() - cpu_before
    cpu_ms = cpu_s * 1000 / answered
    run_ms = (cpu_s - startup_cpu) * 1000 / answered if startup_cpu is not None else float("nan")
    return {"cpu_ms": cpu_ms, "run_ms": run_ms, "client_ms": client_cpu * 1000 / answered, "answered": answered, "rate": answered / wall, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "wall": wall, "drain": drain,
            "stored": stored, "judged": judged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=5)
    parser.add_argument("--patients", type=int, default=200)
    args = parser.parse_args()
    print(f"{args.messages} CBC messages over {args.connections} connections, {args.patients} patients, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'stream':<40} {'msg/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/msg':>10} {'no start':>8} "
          f"{'client':>7}")
    for label, with_pid in (("ORU^R01, stored and judged", True), ("reference: AE (no PID), nothing judged", False)):
        r = run(args.messages, args.connections, args.patients, with_pid)
        print(f"{label:<40} {r['rate']:>7.0f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['cpu_ms']:>10.2f} "
              f"{r['run_ms']:>8.2f} {r['client_ms']:>7.2f}")
        if with_pid:
            print(f"  judging: {r['judged']:.0f} of {r['stored']:.0f} messages judged; the graceful stop (judging "
                  f"the backlog, at most 20 s) took {r['drain']:.1f} s after the last ACK: "
                  f"{r['judged'] / (r['wall'] + r['drain']):.0f} messages judged/s overall")


if __name__ == "__main__":
    main()
