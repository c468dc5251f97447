"""Load benchmark of `leukowatch serve`: req/s and p50/p99 latency for `POST /api/assess` (full CBC)
and a `patient-view` hook with prefetch (JWT verified: ES384, allow-listed issuer, replay cache).

The server is `leukowatch serve` in its own process (one uvicorn worker, 127.0.0.1, a temporary
DuckDB store, JWT verification on) with authentication on (issue 12): an API token is made with
`leukowatch token create`, `LEUKOWATCH_OPEN_STATELESS=0` closes even the stateless endpoints, and
every request carries `Authorization: Bearer <token>`, so the numbers include the Host check,
the security headers and the token check of every request. The load comes from `wrk` when it is on PATH (`apt-get install
wrk`): a C client measures the server, where a Python client would measure itself (httpx tops out
at a few hundred req/s on 2 cores). Every hook request carries its own freshly signed JWT (unique `jti`,
`aud` = the service URL): tokens are signed here beforehand and handed out one per request by a Lua
script, since the server refuses a replayed token. Without wrk the old Python client path runs and
says so. Latency is measured under the same load (wrk's connections in flight).

Goals (issue 6): >= 1,000 req/s and p99 < 25 ms for /api/assess on 2 cores with one worker; hooks
well inside the CDS Hooks 500 ms. Reference: `GET /cds-services` (a static JSON answer: the
framework's floor on this machine).

    python bench/serve.py [--duration 10] [--connections 8] [--threads 1] [--python] [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures import FULL_CBC  # noqa: E402
from service_helpers import (  # noqa: E402
    Signer,
    condition,
    free_port,
    medication_request,
    neutropenic_cbc,
    patient_resource,
    searchset,
)

ISS = "https://bench-ehr.example"
#: The API token every unsigned request carries (made in `main`).
API_TOKEN: list[str] = [""]
HOOK_PATH = "/cds-services/leukowatch-patient-view"
HOOK = {
    "hook": "patient-view", "hookInstance": "bench",
    "context": {"userId": "Practitioner/1", "patientId": "pat-1"},
    "prefetch": {"patient": patient_resource(), "cbc": searchset(neutropenic_cbc(anc=0.6)),
                 "medications": searchset([medication_request("m1", "Bactrim DS")]),
                 "conditions": searchset([condition("c1", "lupus")])},
}
#: Upper bound on pre-signed tokens (about 0.75 ms each): keeps signing time bounded.
MAX_TOKENS = 60_000
START_TIMEOUT_S = 30


@dataclass
class Target:
    name: str
    method: str
    path: str
    body: bytes | None = None
    signed: bool = False  # a fresh JWT per request


TARGETS = (
    Target("GET /cds-services (floor)", "GET", "/cds-services"),
    Target("POST /api/assess (full CBC)", "POST", "/api/assess", json.dumps(FULL_CBC).encode()),
    Target("patient-view hook + prefetch + JWT", "POST", HOOK_PATH, json.dumps(HOOK).encode(), signed=True),
)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int = 0  # non-2xx answers and socket errors


# ---------------------------------------------------------------------------------------------
# The machine: how much CPU did processes other than ours take while we measured? (Linux /proc)


class CpuWatch:
    """CPU used by the whole machine minus this process, its finished children (wrk) and the server,
    and the hypervisor's steal, between start() and shares(): a shared machine shows up as a number."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            stat = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
            server = (int(stat[11]) + int(stat[12])) / self.tick  # utime + stime
        except (OSError, ValueError, IndexError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = cpu
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = server + me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        busy = (user + nice + system + irq + softirq) / self.tick
        return busy - ours, steal / self.tick, time.monotonic()

    def start(self) -> None:
        self.t0 = self._sample()

    def shares(self) -> tuple[float, float] | None:
        """Cores' worth of CPU other processes used, and cores stolen by the hypervisor, since start()."""
        t1 = self._sample()
        if self.t0 is None or t1 is None:
            return None
        wall = t1[2] - self.t0[2]
        return max(0.0, t1[0] - self.t0[0]) / wall, (t1[1] - self.t0[1]) / wall


# ---------------------------------------------------------------------------------------------
# The server


def _cli() -> list[str]:
    cli = shutil.which("leukowatch", path=str(Path(sys.executable).parent)) or shutil.which("leukowatch")
    return [cli] if cli else [sys.executable, "-c", "import sys; from leukowatch.cli import main; sys.exit(main())"]


def make_api_token(workdir: Path) -> str:
    """A read token in the bench store, made as an operator would (the token is the last line)."""
    out = subprocess.run(_cli() + ["token", "create", "--db", str(workdir / "bench.duckdb"), "--role", "read",
                                   "--name", "bench"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def start_server(port: int, workdir: Path, jwks_path: Path) -> subprocess.Popen:
    """`leukowatch serve` with an allow-listed issuer and its key (verification on), a fresh store,
    and every endpoint behind a token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEUKOWATCH_")}
    env.update({"LEUKOWATCH_CDS_ISSUERS": ISS, "LEUKOWATCH_CDS_JWKS": str(jwks_path),
                "LEUKOWATCH_OPEN_STATELESS": "0"})
    cmd = _cli() + ["serve", "--db", str(workdir / "bench.duckdb"), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    raise SystemExit("leukowatch serve did not start:\n" + (workdir / "server.log").read_text()[-2000:])


def check_endpoints(base: str, signer: Signer) -> None:
    """One call each before timing: a benchmark of 401s or 4xx would measure nothing."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for t in TARGETS:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN[0]}"}
            if t.signed:
                headers["Authorization"] = f"Bearer {signer.token(base + t.path)}"
            elif t.path == "/api/assess" and client.request(t.method, t.path, content=t.body).status_code != 401:
                raise SystemExit("/api/assess answered without a token: authentication is not on")
            resp = client.request(t.method, t.path, content=t.body, headers=headers)
            if resp.status_code != 200:
                raise SystemExit(f"{t.name}: HTTP {resp.status_code} {resp.text[:300]}")
            if t.signed and not resp.json().get("cards"):
                raise SystemExit(f"{t.name}: answered 200 without cards: {resp.text[:300]}")


# ---------------------------------------------------------------------------------------------
# wrk path

_LUA = """-- generated by bench/serve.py
local body_file, token_file, nthreads, api_token = {body_file}, {token_file}, {threads}, {api_token}
local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
wrk.method = {method}
wrk.path = {path}
wrk.headers["Host"] = {host}
wrk.headers["Content-Type"] = "application/json"
if body_file then wrk.body = slurp(body_file) end
if api_token then wrk.headers["Authorization"] = "Bearer " .. api_token end

local nthread = 0
function setup(thread) nthread = nthread + 1; thread:set("tid", nthread) end

if token_file then
  -- each wrk thread takes every nthreads-th token, so no two requests share a jti
  local tokens, i = {{}}, 0
  function init(args)
    local n = 0
    for line in io.lines(token_file) do
      if n % nthreads == tid - 1 then tokens[#tokens + 1] = line end
      n = n + 1
    end
  end
  function request()
    i = i + 1
    local headers = {{["Host"] = wrk.headers["Host"], ["Content-Type"] = "application/json"}}
    if tokens[i] then headers["Authorization"] = "Bearer " .. tokens[i] end  -- none left: a counted 401
    return wrk.format(nil, nil, headers, nil)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"status_errors": %d, "socket_errors": %d}}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _lua_str(value: str | None) -> str:
    if value is None:
        return "nil"
    if not value.isascii() or any(c in value for c in '"\\\n'):
        raise SystemExit(f"cannot quote {value!r} for Lua")
    return f'"{value}"'


def wrk_run(wrk: str, base: str, t: Target, workdir: Path, duration: float, connections: int, threads: int,
            tokens: list[str] | None = None) -> Result:
    host = base.removeprefix("http://")
    body_file = token_file = None
    if t.body is not None:
        body_file = workdir / "body.json"
        body_file.write_bytes(t.body)
    if tokens is not None:
        token_file = workdir / "tokens.txt"
        token_file.write_text("\n".join(tokens) + "\n")
    script = workdir / "bench.lua"
    script.write_text(_LUA.format(
        body_file=_lua_str(body_file and str(body_file)), token_file=_lua_str(token_file and str(token_file)),
        threads=threads, method=_lua_str(t.method), path=_lua_str(t.path), host=_lua_str(host),
        api_token=_lua_str(None if tokens is not None else API_TOKEN[0])))
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "-s", str(script),
           base + t.path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    match = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")
    r = json.loads(match.group(1))
    return Result(r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000, r["p99_us"] / 1000,
                  r["status_errors"] + r["socket_errors"])


def wrk_bench(wrk: str, base: str, signer: Signer, workdir: Path, args: argparse.Namespace) -> list[Result]:
    rows = []
    run = dict(workdir=workdir, connections=args.connections, threads=args.threads)
    for t in TARGETS:
        if not t.signed:
            wrk_run(wrk, base, t, duration=1, **run)  # warm-up
            rows.append(wrk_run(wrk, base, t, duration=args.duration, **run))
            continue
        url = base + t.path
        # A 1 s pilot (also the warm-up) tells how many tokens the timed run will use; sign 1.5x that.
        pilot = wrk_run(wrk, base, t, duration=1, tokens=[signer.token(url) for _ in range(2000)], **run)
        # 3x the pilot's rate: a pilot slowed by a busy moment must not leave the timed run without
        # tokens (each unused token is a counted 401). Lifetime 300 s: the service refuses longer.
        need = min(MAX_TOKENS, int(pilot.rps * args.duration * 3) + 100)
        tokens = [signer.token(url, exp_in=300) for _ in range(need)]
        rows.append(wrk_run(wrk, base, t, duration=args.duration, tokens=tokens, **run))
        print(f"  (hook: {need} tokens pre-signed from a {pilot.rps:.0f} req/s pilot)", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------
# Python fallback: httpx in this process (measures the client as much as the server)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _requests(t: Target, base: str, signer: Signer, n: int) -> list[dict[str, Any]]:
    def one() -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN[0]}"}
        if t.signed:
            headers["Authorization"] = f"Bearer {signer.token(base + t.path)}"
        return {"method": t.method, "url": t.path, "content": t.body, "headers": headers}

    return [one() for _ in range(n)] if t.signed else [one()] * n


def latency(client: httpx.Client, requests: list[dict[str, Any]]) -> list[float]:
    out = []
    for req in requests:
        t0 = time.perf_counter()
        resp = client.request(**req)
        out.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{req['url']}: HTTP {resp.status_code} {resp.text[:200]}")
    return out


async def throughput(base: str, requests: list[dict[str, Any]], clients: int) -> float:
    queue = list(reversed(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            resp = await client.request(**queue.pop())
            if resp.status_code != 200:
                raise SystemExit(f"HTTP {resp.status_code}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return len(requests) / (time.perf_counter() - t0)


def python_bench(base: str, signer: Signer, args: argparse.Namespace) -> list[Result]:
    rows = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for t in TARGETS:
            latency(client, _requests(t, base, signer, min(200, args.n)))  # warm-up
            lat = latency(client, _requests(t, base, signer, args.n))
            rps = asyncio.run(throughput(base, _requests(t, base, signer, args.n), args.connections))
            rows.append(Result(rps, statistics.median(lat), pct(lat, 0.99)))
    return rows


# ---------------------------------------------------------------------------------------------


def report(rows: list[Result], header: str, client_bound: bool) -> None:
    print(header)
    print(f"{'endpoint':38} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for t, r in zip(TARGETS, rows, strict=True):
        flag = f"   {r.failed} failed requests!" if r.failed else ""
        print(f"{t.name:38} {r.rps:8.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f}{flag}")
    floor, assess_, hook = rows
    ok = assess_.rps >= 1000 and assess_.p99_ms < 25
    print(f"goal /api/assess: >= 1,000 req/s and p99 < 25 ms (2 cores, one worker): "
          f"{'met' if ok else 'NOT met'} ({assess_.rps:.0f} req/s, p99 {assess_.p99_ms:.1f} ms)"
          + (" - client-bound fallback: no verdict on the server; install wrk" if client_bound else ""))
    print(f"goal hooks: well inside the CDS Hooks 500 ms: p99 {hook.p99_ms:.1f} ms = "
          f"{hook.p99_ms / 500:.0%} of that budget{'' if hook.p99_ms < 500 else ' (NOT met)'}")
    print(f"reference: GET /cds-services (static JSON, the framework's floor) {floor.rps:.0f} req/s; "
          f"/api/assess runs at {assess_.rps / floor.rps:.0%} of it, the hook at {hook.rps / floor.rps:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10, help="wrk: seconds per endpoint (default 10)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--python", action="store_true", help="use the Python client even when wrk is installed")
    ap.add_argument("--n", type=int, default=2000, help="Python client: requests per measurement")
    args = ap.parse_args()
    if not 0 < args.duration <= 60 or not 0 < args.threads <= args.connections <= 256:
        ap.error("need 0 < duration <= 60 and 0 < threads <= connections <= 256")
    wrk = None if args.python else shutil.which("wrk")
    signer = Signer("ES384", iss=ISS)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="leukowatch-bench-") as tmp:
        workdir = Path(tmp)
        jwks = workdir / "jwks.json"
        jwks.write_text(json.dumps({"keys": [signer.jwk]}))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        API_TOKEN[0] = make_api_token(workdir)
        proc = start_server(port, workdir, jwks)
        try:
            check_endpoints(base, signer)
            watch = CpuWatch(proc.pid)
            watch.start()
            if wrk:
                version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout
                rows = wrk_bench(wrk, base, signer, workdir, args)
                client = (f"{' '.join(version.split()[:2])}, {args.threads} thread(s), {args.connections} "
                          f"connections, {args.duration:g} s per endpoint; latency under that load")
            else:
                if not args.python:
                    print("wrk not found on PATH: falling back to the Python httpx client, which measures "
                          "itself as much as the server (apt-get install wrk)", file=sys.stderr)
                rows = python_bench(base, signer, args)
                client = (f"PYTHON httpx client (fallback, client-bound), n={args.n}, {args.connections} "
                          f"clients for req/s; latency from one request in flight")
            shares = watch.shares()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    busy = "" if shares is None else (f", meanwhile other processes used {shares[0]:.1f} cores and the "
                                      f"hypervisor stole {shares[1]:.1f}")
    header = (f"leukowatch serve: 1 uvicorn worker on 127.0.0.1, JWT verification on, a bearer token on "
              f"every request (LEUKOWATCH_OPEN_STATELESS=0)\n"
              f"machine: {os.cpu_count()} cores, load average {load:.1f} before the run{busy}\n"
              f"load: {client}")
    report(rows, header, client_bound=not wrk)
    if any(r.failed for r in rows):
        raise SystemExit("some requests failed (see the table): the numbers above are not valid")


if __name__ == "__main__":
    main()
