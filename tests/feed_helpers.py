"""Helpers for the lab-feed tests: HL7 messages, a real `leukowatch listen` subprocess, and python-hl7's
own asyncio MLLP client (`hl7.mllp.open_hl7_connection`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import hl7
from hl7.mllp import open_hl7_connection
from service_helpers import serve

REPO = Path(__file__).resolve().parents[1]
FEED_STREAM = REPO / "tests" / "data" / "feed_stream.hl7"


def oru(control_id: str, patient: str = "P1", when: str = "202611010800", wbc: float = 6.0, anc: float = 3.5,
        facility: str = "CITYLAB", version: str = "2.5.1", msh15: str = "", msh16: str = "") -> str:
    """One ORU^R01 with a WBC and an ANC (CR-separated, as on the wire)."""
    msh = f"MSH|^~\\&|LABSYS|{facility}|LEUKOWATCH|WARD|{when}||ORU^R01^ORU_R01|{control_id}|P|{version}"
    if msh15 or msh16:
        msh += f"|||{msh15}|{msh16}"
    return "\r".join([
        msh,
        f"PID|1||{patient}^^^{facility}^MR||DOE^ALEX||19700101|F",
        f"OBR|1|O-{control_id}|F-{control_id}|58410-2^CBC^LN|||{when}",
        f"OBX|1|NM|6690-2^WBC^LN||{wbc}|10*9/L|4.0-11.0||||F|||{when}",
        f"OBX|2|NM|751-8^ANC^LN||{anc}|10*9/L|1.5-7.5||||F|||{when}",
    ])


def stream_messages() -> list[str]:
    """The example stream of tests/data/feed_stream.hl7 (LF-separated on disk), one string each."""
    text = FEED_STREAM.read_text(encoding="utf-8").replace("\n", "\r")
    return ["MSH" + part.rstrip("\r") for part in text.split("MSH")[1:]]


def ack_fields(ack: hl7.Message) -> dict[str, str]:
    """MSA-1, MSA-2 and the ACK's MSH fields a test checks."""
    msh, msa = ack.segment("MSH"), ack.segment("MSA")
    out = {"code": str(msa(1)), "control_id": str(msa(2)), "sending_app": str(msh(3)),
           "receiving_app": str(msh(5)), "receiving_facility": str(msh(6)), "version": str(msh(12)),
           "type": str(msh(9))}
    with contextlib.suppress(KeyError, IndexError):
        out["err"] = str(ack.segment("ERR"))
    return out


async def send_all(port: int, messages: list[str], ssl: object = None) -> list[hl7.Message]:
    """Send messages one at a time on one connection, each after the previous ACK (as an engine does)."""
    reader, writer = await open_hl7_connection("127.0.0.1", port, ssl=ssl, encoding="utf-8")
    acks = []
    try:
        for message in messages:
            writer.writemessage(message)
            await writer.drain()
            acks.append(await asyncio.wait_for(reader.readmessage(), timeout=30))
    finally:
        writer.close()
    return acks


def exchange(port: int, messages: list[str], ssl: object = None) -> list[dict[str, str]]:
    return [ack_fields(a) for a in asyncio.run(send_all(port, messages, ssl))]


@contextlib.contextmanager
def listener(db: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """`leukowatch listen --port 0` as a subprocess; yields (process, port); stopped with SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-m", "leukowatch.cli", "listen", "--db", str(db), "--port", "0",
                             "--log-level", "warning", *extra],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    try:
        port = wait_port(proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


def wait_port(proc: subprocess.Popen) -> int:
    """The MLLP port a `listen` or `serve --mllp-port` subprocess announces on stderr."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"listener exited with {proc.returncode}")
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError("listener did not start")


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Read the store after the listener stopped (DuckDB allows one writing process per file)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def token(db: Path, role: str = "read", name: str = "nurse-a") -> str:
    """`leukowatch token create` (the token is the last stdout line), before any server opens the store."""
    out = subprocess.run([sys.executable, "-m", "leukowatch.cli", "token", "create", "--db", str(db), "--role", role,
                          "--name", name], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


@contextlib.contextmanager
def feed_service(db: Path, notify: tuple[str | None, str | None] = (None, None),
                 max_message_bytes: int = 1_000_000) -> Iterator[tuple[str, Any, int]]:
    """The web service with its MLLP listener in the same process (what `serve --mllp-port` runs),
    under a real uvicorn on loopback; yields (base URL, app, MLLP port)."""
    from leukowatch.service import Settings, create_app
    from leukowatch.service.mllp import FeedOptions

    app = create_app(Settings(db=str(db)))
    app.state.lab_feed = FeedOptions(port=0, max_message_bytes=max_message_bytes)
    app.state.notify = notify
    with serve(app) as base:
        yield base, app, app.state.feed.port


def wait_judged(app: Any, timeout: float = 120) -> None:
    """Wait until the in-process feed has judged every message it stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = app.state.writer.cursor()
        try:
            upto, last = cur.execute("SELECT (SELECT judged_upto FROM feed_progress), "
                                     "(SELECT coalesce(max(inbox_id), 0) FROM feed_inbox)").fetchone()
        finally:
            cur.close()
        if upto >= last:
            return
        time.sleep(0.05)
    raise TimeoutError("the feed did not judge its inbox in time")


def read(app: Any, sql: str, params: list | None = None) -> list[tuple]:
    """Read the store of a running service through its writer's connection."""
    cur = app.state.writer.cursor()
    try:
        return cur.execute(sql, params or []).fetchall()
    finally:
        cur.close()
