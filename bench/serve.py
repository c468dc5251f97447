"""Load benchmark of `leukowatch serve`: req/s and p50/p99 latency for `POST /api/assess` (full CBC)
and a `patient-view` hook with prefetch (JWT verified: ES384, allow-listed issuer, replay cache).

The server runs as its own process (uvicorn, one worker, 127.0.0.1, access log off); the client is
this process. Latency comes from a sequential loop (one request in flight); throughput from `--clients`
concurrent keep-alive connections. Bounded: `--n` requests per measurement. Goals (issue 6): >= 1,000
req/s and p99 < 25 ms for /api/assess on 2 cores with one worker; hooks well inside 500 ms.
Reference: `GET /cds-services` (a static JSON answer: the framework's floor on this machine).

    python bench/serve.py [--n 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures import FULL_CBC  # noqa: E402
from service_helpers import (  # noqa: E402
    Signer,
    condition,
    medication_request,
    neutropenic_cbc,
    patient_resource,
    searchset,
)

ISS = "https://bench-ehr.example"
CBC = FULL_CBC
HOOK = {
    "hook": "patient-view", "hookInstance": "bench",
    "context": {"userId": "Practitioner/1", "patientId": "pat-1"},
    "prefetch": {"patient": patient_resource(), "cbc": searchset(neutropenic_cbc(anc=0.6)),
                 "medications": searchset([medication_request("m1", "Bactrim DS")]),
                 "conditions": searchset([condition("c1", "lupus")])},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, jwks_path: str) -> subprocess.Popen:
    env = {**os.environ, "LEUKOWATCH_CDS_ISSUERS": ISS, "LEUKOWATCH_CDS_JWKS": jwks_path}
    code = ("import uvicorn; from leukowatch.service import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, workers=1, log_level='warning', "
            "access_log=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
            req = queue.pop()
            resp = await client.request(**req)
            if resp.status_code != 200:
                raise SystemExit(f"HTTP {resp.status_code}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return len(requests) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--clients", type=int, default=8, help="concurrent connections for req/s")
    args = ap.parse_args()
    signer = Signer("ES384", iss=ISS)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"keys": [signer.jwk]}, fh)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hook_url = f"{base}/cds-services/leukowatch-patient-view"
    proc = start_server(port, fh.name)
    try:
        cbc_body = json.dumps(CBC).encode()
        hook_body = json.dumps(HOOK).encode()

        def assess_reqs(n: int) -> list[dict[str, Any]]:
            return [{"method": "POST", "url": "/api/assess", "content": cbc_body,
                     "headers": {"Content-Type": "application/json"}}] * n

        def hook_reqs(n: int) -> list[dict[str, Any]]:  # a fresh token (jti) per call, signed beforehand
            return [{"method": "POST", "url": "/cds-services/leukowatch-patient-view", "content": hook_body,
                     "headers": {"Content-Type": "application/json",
                                 "Authorization": f"Bearer {signer.token(hook_url)}"}} for _ in range(n)]

        def discovery_reqs(n: int) -> list[dict[str, Any]]:
            return [{"method": "GET", "url": "/cds-services"}] * n

        rows = []
        with httpx.Client(base_url=base, timeout=30) as client:
            for name, make in (("GET /cds-services (floor)", discovery_reqs), ("POST /api/assess (full CBC)", assess_reqs),
                               ("patient-view hook + prefetch + JWT", hook_reqs)):
                latency(client, make(min(200, args.n)))  # warm-up
                lat = latency(client, make(args.n))
                rps = asyncio.run(throughput(base, make(args.n), args.clients))
                rows.append((name, rps, statistics.median(lat), pct(lat, 0.99)))
        print(f"leukowatch serve: 1 uvicorn worker on 127.0.0.1, {os.cpu_count()} CPUs, n={args.n}, "
              f"{args.clients} clients for req/s (client shares the machine)")
        print(f"{'endpoint':38} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, rps, p50, p99 in rows:
            print(f"{name:38} {rps:8.0f} {p50:8.2f} {p99:8.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        Path(fh.name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
