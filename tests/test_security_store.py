"""Writes that never lose a result (issue 12 §5), against a real `leukowatch serve` process or a real
uvicorn and a real DuckDB file: concurrent distinct and identical ingests through the one writer,
kill -9 mid-ingest (all or nothing), a store locked by another process (503 + Retry-After over
REST, one line and exit 2 from the CLI), future-dated results, and a served run's whole log
holding no patient identifier, name or value."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import httpx
import pytest
from service_helpers import bearer, cbc_bundle, free_port, make_token, serve

from leukowatch.service import Settings, create_app

FHIR = {"Content-Type": "application/fhir+json"}
LW = [sys.executable, "-m", "leukowatch.cli"]


def _observations(db: str, pid: str) -> int:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute("SELECT count(*) FROM observations WHERE patient_id = ?", [pid]).fetchone()[0]
    finally:
        con.close()


def _draw(i: int) -> tuple[str, float, float]:
    return (f"2026-03-{1 + i // 24:02d}T{i % 24:02d}:00:00Z", 3.0 + i / 100, 1.0 + i / 100)


def test_twenty_distinct_messages_for_one_new_patient_are_all_stored(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "ingest")
    bodies = [json.dumps(cbc_bundle("burst-1", [_draw(i)])) for i in range(20)]
    with serve(create_app(Settings(db=db))) as url, ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda b: httpx.post(f"{url}/api/ingest", content=b, headers=FHIR | bearer(token),
                                                     timeout=60), bodies))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
    assert all(a.json()["status"] == "stored" and a.json()["stored"] == 2 for a in answers)
    assert _observations(db, "burst-1") == 40


def test_twenty_copies_of_one_message_are_stored_once(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "ingest")
    body = json.dumps(cbc_bundle("copies-1", [_draw(0), _draw(1)]))
    with serve(create_app(Settings(db=db))) as url, ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{url}/api/ingest", content=body,
                                                     headers=FHIR | bearer(token), timeout=60), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["already stored"] * 19 + ["stored"]
    assert _observations(db, "copies-1") == 4


def test_future_dated_results_are_rejected_with_a_reason(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "ingest")
    body = json.dumps(cbc_bundle("future-1", [("2099-01-01T08:00:00Z", 2.0, 0.05), ("2026-01-01T08:00:00Z", 4.0, 2.0)]))
    with serve(create_app(Settings(db=db))) as url:
        answer = httpx.post(f"{url}/api/ingest", content=body, headers=FHIR | bearer(token)).json()
    assert answer["stored"] == 2 and answer["rejected"] == 2 and answer["status"] == "stored"
    # the sender is told which results were refused and why, not only how many
    assert len(answer["rejects"]) == 2 and all("in the future" in r["reason"] for r in answer["rejects"])
    assert _observations(db, "future-1") == 2
    con = duckdb.connect(db, read_only=True)
    reasons = [r[0] for r in con.execute("SELECT reason FROM rejects").fetchall()]
    con.close()
    assert len(reasons) == 2 and all("in the future" in r for r in reasons)


def test_a_message_whose_every_result_is_refused_is_not_answered_stored(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "ingest")
    body = json.dumps(cbc_bundle("future-2", [("2099-01-01T08:00:00Z", 2.0, 0.05)]))
    with serve(create_app(Settings(db=db))) as url:
        answer = httpx.post(f"{url}/api/ingest", content=body, headers=FHIR | bearer(token)).json()
    assert (answer["status"], answer["stored"], answer["accepted"]) == ("nothing stored", 0, 0)
    assert len(answer["rejects"]) == 2 and _observations(db, "future-2") == 0


# ---------------------------------------------------------------------------------------------
# A store held by another process


@contextmanager
def _held(db: str) -> Iterator[int]:
    """Another process holding the store file open read-write; yields its PID."""
    code = f"import duckdb, sys, time; c = duckdb.connect({db!r}); print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_locked_store_answers_503_with_retry_after(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "admin")
    with _held(db), serve(create_app(Settings(db=db))) as url:
        ingest = httpx.post(f"{url}/api/ingest", content=json.dumps(cbc_bundle("held-1", [_draw(0)])),
                            headers=FHIR | bearer(token))
        assert ingest.status_code == 503 and int(ingest.headers["retry-after"]) > 0
        assert ingest.json()["error"]["field"] == "store"
        assert httpx.get(f"{url}/api/patients", headers=bearer(token)).status_code == 503
    # and the same service recovers once the other process has gone
    with serve(create_app(Settings(db=db))) as url:
        ok = httpx.post(f"{url}/api/ingest", content=json.dumps(cbc_bundle("held-1", [_draw(0)])),
                        headers=FHIR | bearer(token))
        assert ok.status_code == 200


@pytest.mark.parametrize("command", [["history", "p1"], ["report", "p1", "-o", "{tmp}/r.pdf"],
                                     ["ingest", "{msg}"], ["screen", "{db}", "-o", "{tmp}/out", "-q"],
                                     ["token", "list"], ["audit"]])
def test_cli_on_a_locked_store_prints_one_line_and_exits_2(tmp_path: Path, command: list[str]) -> None:
    db = str(tmp_path / "s.duckdb")
    make_token(db, "read")
    msg = tmp_path / "m.json"
    msg.write_text(json.dumps(cbc_bundle("p1", [_draw(0)])))
    args = [a.format(tmp=tmp_path, msg=msg, db=db) for a in command]
    db_flag = [] if command[0] == "screen" else ["--db", db]
    with _held(db) as pid:
        done = subprocess.run(LW + args + db_flag, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"PID {pid}" in lines[0] and "in use by another process" in lines[0]


# ---------------------------------------------------------------------------------------------
# A served process: start-up link, kill -9 mid-ingest, logs


@contextmanager
def _serving(db: str, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], str]]:
    """`leukowatch serve` in its own process (stderr to `log`); yields (url, process, start-up token)."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(LW + ["serve", "--db", db, "--port", str(port), "--log-level", "debug"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            m = re.search(rf"{re.escape(url)}/login\?token=(\S+)", log.read_text())
            if m:
                try:
                    httpx.get(f"{url}/api/knowledge", timeout=2)
                    break
                except httpx.TransportError:
                    pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url, proc, m.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def _token_from_cli(db: str, role: str, name: str) -> str:
    done = subprocess.run(LW + ["token", "create", "--db", db, "--role", role, "--name", name],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]  # the contract: the token is the last line


def test_kill_9_mid_ingest_leaves_all_or_nothing(tmp_path: Path) -> None:
    db, log = str(tmp_path / "s.duckdb"), tmp_path / "serve.log"
    token = _token_from_cli(db, "ingest", "lab")
    big = cbc_bundle("kill-1", [_draw(i) for i in range(600)])  # 1,200 results in one message
    for delay in (0.3, 0.8):
        with _serving(db, log) as (url, proc, _), ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/api/ingest", content=json.dumps(big),
                                  headers=FHIR | bearer(token), timeout=60)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            with suppress(httpx.HTTPError):
                pending.result()
        assert _observations(db, "kill-1") in (0, 1200)
    with _serving(db, log) as (url, _, _):  # the store still opens and takes the message whole
        answer = httpx.post(f"{url}/api/ingest", content=json.dumps(big), headers=FHIR | bearer(token), timeout=60)
        assert answer.status_code == 200
    assert _observations(db, "kill-1") == 1200


def test_served_run_logs_no_patient_identifiers_names_or_values(tmp_path: Path) -> None:
    db, log = str(tmp_path / "s.duckdb"), tmp_path / "serve.log"
    pid, name, value = "MRN-7731904", "Zebediah", 0.0373
    bundle = cbc_bundle(pid, [("2026-02-01T08:00:00Z", 2.11, value)])
    bundle["entry"][0]["resource"]["name"] = [{"family": name, "given": ["Quintus"]}]
    hl7 = (f"MSH|^~\\&|LAB|H|LW|H|20260201080000||ORU^R01|M1|P|2.5\rPID|1||{pid}-2||{name}^Quintus||19800501|M\r"
           f"OBR|1|||57021-8^CBC^LN\rOBX|1|NM|6690-2^WBC^LN||2.11|10*3/uL|||||F|||20260201080000\r")
    with _serving(db, log) as (url, _, startup):
        ingest = bearer(_startup_admin_token(url, startup))
        assert httpx.post(f"{url}/api/ingest", content=json.dumps(bundle), headers=FHIR | ingest).status_code == 200
        assert httpx.post(f"{url}/api/ingest", content=hl7, headers={"Content-Type": "x-application/hl7-v2+er7"}
                          | ingest).status_code == 200
        for path in (f"/api/patients/{pid}/history", f"/api/patients/{pid}-nobody/history", f"/patients/{pid}",
                     f"/patients/{pid}/plot.png", "/api/patients"):
            assert httpx.get(url + path, headers=ingest, timeout=60).status_code in (200, 404)
        bad = httpx.post(f"{url}/api/assess", json={"patient": {"id": pid, "sex": name},
                                                   "observations": [{"value": value, "unit": "furlong"}]})
        assert bad.status_code == 422
        # an unreadable haemoglobin is left out of the assessment: the caller is told, the log is not
        with_bad_hb = hl7 + "OBX|2|NM|718-7^HGB^LN||-13.7|g/dL|||||F|||20260201080000\r"
        told = httpx.post(f"{url}/api/assess", content=with_bad_hb, headers={"Content-Type": "x-application/hl7-v2+er7"})
        assert told.status_code == 200 and any("-13.7" in w and "left out" in w for w in told.json()["warnings"])
    text = log.read_text()
    assert "login?token=" in text  # the log is the real one
    for secret in (pid, name, "Quintus", str(value), "2.11", "1980-05-01", "19800501", "-13.7"):
        assert secret not in text, f"{secret!r} in the service log"


def _startup_admin_token(url: str, startup: str) -> str:
    """The start-up link's admin token signs a browser in; an admin makes an API token with it."""
    with httpx.Client(base_url=url) as browser:
        assert browser.get("/login", params={"token": startup}).status_code == 303
    made = httpx.post(f"{url}/api/tokens", json={"name": "log-test", "role": "admin"}, headers=bearer(startup))
    assert made.status_code == 200, made.text
    return made.json()["token"]


def test_a_new_store_is_private_to_its_user(tmp_path: Path) -> None:
    db = tmp_path / "private" / "s.duckdb"
    make_token(str(db), "read")
    assert db.stat().st_mode & 0o777 == 0o600
    assert db.parent.stat().st_mode & 0o777 == 0o700


def test_audit_cli_prints_rows_and_fhir_audit_events(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "ingest", "lab-1")
    with serve(create_app(Settings(db=db))) as url:
        httpx.post(f"{url}/api/ingest", content=json.dumps(cbc_bundle("aud-1", [_draw(0)])),
                   headers=FHIR | bearer(token)).raise_for_status()
    rows = json.loads(subprocess.run(LW + ["audit", "--db", db, "--json", "--patient", "aud-1"], capture_output=True,
                                     text=True, check=True).stdout)
    assert [(r["actor"], r["action"], r["outcome"]) for r in rows] == [("lab-1", "ingest", "ok")]
    bundle = json.loads(subprocess.run(LW + ["audit", "--db", db, "--fhir", "--since", "2000-01-01"],
                                       capture_output=True, text=True, check=True).stdout)
    [entry] = bundle["entry"]
    assert entry["resource"]["resourceType"] == "AuditEvent" and entry["resource"]["action"] == "C"
    assert entry["resource"]["agent"][0]["who"]["display"] == "lab-1"
    bad = subprocess.run(LW + ["audit", "--db", db, "--since", "yesterday"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --since")
