"""Notifications for new critical worklist items, against real receivers (uvicorn on loopback): a
signed webhook with retries and a dead letter, and FHIR Flag + Communication by conditional create."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from feed_helpers import exchange, feed_service, oru, read, wait_judged
from service_helpers import serve

from leukowatch.service.judge import NewItem
from leukowatch.service.notify import IDENTIFIER_SYSTEM, Notifier
from leukowatch.service.writer import StoreWriter

SECRET = b"test-shared-secret"


def _receiver(fail_first: int = 0) -> tuple[FastAPI, dict[str, list[Any]]]:
    """A webhook receiver that checks the signature as a real one would, and a FHIR endpoint that
    honours If-None-Exist (conditional create)."""
    app = FastAPI()
    got: dict[str, list[Any]] = {"webhook": [], "bad_signature": [], "Flag": [], "Communication": [], "calls": []}

    @app.post("/hook")
    async def hook(request: Request) -> JSONResponse:
        got["calls"].append(1)
        if len(got["calls"]) <= fail_first:
            return JSONResponse({"error": "down for maintenance"}, status_code=503)
        body = await request.body()
        stamp = request.headers["x-leukowatch-timestamp"]
        expected = "sha256=" + hmac.new(SECRET, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["x-leukowatch-signature"]):
            got["bad_signature"].append(body)
            return JSONResponse({"error": "bad signature"}, status_code=401)
        got["webhook"].append(json.loads(body))
        return JSONResponse({"ok": True})

    @app.post("/fhir/{kind}")
    async def create(kind: str, request: Request) -> JSONResponse:
        resource = await request.json()
        wanted = request.headers.get("if-none-exist", "").removeprefix("identifier=")
        for rid, existing in enumerate(got[kind], start=1):
            ident = existing["identifier"][0]
            if f"{ident['system']}|{ident['value']}" == wanted:
                return JSONResponse(existing | {"id": str(rid)}, status_code=200)
        got[kind].append(resource)
        rid = str(len(got[kind]))
        return JSONResponse(resource | {"id": rid}, status_code=201, headers={"Location": f"/fhir/{kind}/{rid}/_history/1"})

    return app, got


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _item(con: Any, patient: str = "P-N") -> NewItem:
    now = datetime.now(UTC)
    row = con.execute("INSERT INTO worklist (patient_id, code, level, message, result_time, received_at, inbox_id, "
                      "created_at, status) VALUES (?, 'severe_neutropenia', 'critical', 'ANC <0.1', ?, ?, 1, ?, "
                      "'open') RETURNING item_id", [patient, now, now, now]).fetchone()
    return NewItem(int(row[0]), patient, "severe_neutropenia", "critical", "ANC <0.1", now, now)


def _run_until(notifier: Notifier, writer: StoreWriter, done: Callable[[Any], bool], timeout: float = 60) -> None:
    async def go() -> None:
        notifier.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                cur = writer.cursor()
                try:
                    if done(cur):
                        return
                finally:
                    cur.close()
                await asyncio.sleep(0.05)
            raise TimeoutError("notifier did not finish")
        finally:
            await notifier.stop()

    asyncio.run(go())


def _outbox(con: Any) -> list[tuple]:
    return con.execute("SELECT status, attempts, last_error FROM notify_outbox ORDER BY notice_id").fetchall()


def test_webhook_receiver_down_retries_then_dead_letter(tmp_path: Path) -> None:
    writer = StoreWriter(str(tmp_path / "store.duckdb"))
    try:
        url = f"http://127.0.0.1:{_free_port()}/hook"  # nothing listens there
        notifier = Notifier(writer, webhook_url=url, secret=SECRET, max_attempts=3, base_delay_s=0.05)
        item = writer.run_sync(_item)
        writer.run_sync(lambda con: notifier.enqueue(con, [item]))
        _run_until(notifier, writer, lambda con: _outbox(con)[0][0] != "pending")
        cur = writer.cursor()
        status, attempts, error = _outbox(cur)[0]
        dead = cur.execute("SELECT item_id, channel, target, payload, attempts FROM notify_dead_letter").fetchall()
        cur.close()
    finally:
        writer.close()
    assert (status, attempts, error) == ("dead", 3, "ConnectError")
    assert len(dead) == 1 and dead[0][:3] == (item.item_id, "webhook", url) and dead[0][4] == 3
    assert json.loads(dead[0][3])["item_id"] == item.item_id  # nothing lost: the notice is kept whole


def test_webhook_retries_until_the_receiver_answers_and_signs(tmp_path: Path) -> None:
    app, got = _receiver(fail_first=2)
    writer = StoreWriter(str(tmp_path / "store.duckdb"))
    try:
        with serve(app) as base:
            notifier = Notifier(writer, webhook_url=f"{base}/hook", secret=SECRET, max_attempts=5, base_delay_s=0.05)
            item = writer.run_sync(_item)
            writer.run_sync(lambda con: notifier.enqueue(con, [item]))
            _run_until(notifier, writer, lambda con: _outbox(con)[0][0] != "pending")
            cur = writer.cursor()
            outbox = _outbox(cur)
            cur.close()
    finally:
        writer.close()
    assert outbox == [("sent", 3, "HTTP 503")]
    assert got["bad_signature"] == [] and [w["item_id"] for w in got["webhook"]] == [item.item_id]
    assert got["webhook"][0] | {"received_at": None, "result_time": None} == {
        "event": "worklist.item", "item_id": item.item_id, "patient_id": "P-N", "code": "severe_neutropenia",
        "level": "critical", "message": "ANC <0.1", "received_at": None, "result_time": None}


def test_fhir_flag_and_communication_once_even_when_resent(tmp_path: Path) -> None:
    app, got = _receiver()
    writer = StoreWriter(str(tmp_path / "store.duckdb"))
    try:
        with serve(app) as base:
            notifier = Notifier(writer, fhir_base=f"{base}/fhir", base_delay_s=0.05)
            item = writer.run_sync(_item)
            writer.run_sync(lambda con: notifier.enqueue(con, [item]))
            _run_until(notifier, writer, lambda con: _outbox(con)[0][0] == "sent")
            # a retry after a lost response: the same notice delivered again
            writer.run_sync(lambda con: con.execute("UPDATE notify_outbox SET status = 'pending'"))
            _run_until(notifier, writer, lambda con: _outbox(con)[0][0] == "sent")
    finally:
        writer.close()
    assert len(got["Flag"]) == 1 and len(got["Communication"]) == 1
    flag, communication = got["Flag"][0], got["Communication"][0]
    assert flag["identifier"][0] == {"system": IDENTIFIER_SYSTEM, "value": str(item.item_id)}
    assert flag["subject"] == {"identifier": {"value": "P-N"}} and flag["status"] == "active"
    assert flag["code"]["coding"][0]["code"] == "severe_neutropenia"
    assert communication["about"] == [{"reference": "Flag/1"}] and communication["priority"] == "stat"


def test_feed_notifies_new_critical_items_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEUKOWATCH_NOTIFY_SECRET", SECRET.decode())
    receiver, got = _receiver()
    db = tmp_path / "store.duckdb"
    with serve(receiver) as hooks, feed_service(db, notify=(f"{hooks}/hook", f"{hooks}/fhir")) as (_, app, port):
        acks = exchange(port, [oru("N-1", patient="NP", when="202611010800", anc=3.2),
                               oru("N-2", patient="NP", when="202611020800", wbc=0.9, anc=0.05),
                               oru("N-3", patient="NP", when="202611030800", wbc=0.9, anc=0.05)])
        assert [a["code"] for a in acks] == ["AA"] * 3
        wait_judged(app)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (got["webhook"] and got["Communication"]):
            time.sleep(0.05)
        critical = read(app, "SELECT item_id, code FROM worklist WHERE level = 'critical'")
    assert critical, "an ANC below 0.1 is critical in any context"
    assert sorted(w["item_id"] for w in got["webhook"]) == sorted(r[0] for r in critical)
    assert len(got["Flag"]) == len(critical) and len(got["Communication"]) == len(critical)
