"""The worklist fed by the lab feed, in the web service's own process (`serve --mllp-port`): items
once and only for new alert states, the API's filters and roles, acknowledgement (audited), and the
page (critical first, oldest first, overdue mark, refresh without a script)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from feed_helpers import exchange, feed_service, oru, read, stream_messages, token, wait_judged

from leukowatch.assess import assess
from leukowatch.io.hl7v2 import read_hl7
from leukowatch.service.judge import WORKLIST_LEVELS


def _expected_new_alerts(messages: list[str]) -> list[list[tuple[str, str]]]:
    """The oracle: for each message, the alerts `assess` gives the history up to it that it did not
    give the history before it (the clinical rules are assess's; this only compares sets)."""
    observations: list[dict[str, Any]] = []
    before: set[tuple[str, str]] = set()
    out = []
    for message in messages:
        observations += [item.raw for item in read_hl7(message).items]
        request = {"patient": {"id": "FEED-1", "sex": "female", "birth_date": "1970-04-12"},
                   "observations": list(observations)}
        current = {(a.code, a.level) for a in assess(request).alerts}
        out.append(sorted(k for k in current - before if k[1] in WORKLIST_LEVELS))
        before = current
    return out


def test_worklist_for_a_stream_for_one_person(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    auth = {"Authorization": f"Bearer {token(db, 'read', 'nurse-a')}"}
    messages = stream_messages()
    expected = _expected_new_alerts(messages)
    assert expected[0] == [] and any(expected), "the example stream starts normal and has a new alert later"
    with feed_service(db) as (base, app, port):
        assert [a["code"] for a in exchange(port, messages)] == ["AA"] * len(messages)
        wait_judged(app)
        items = httpx.get(f"{base}/api/worklist", params={"patient": "FEED-1"}, headers=auth).json()
        by_message = [sorted((i["code"], i["level"]) for i in items if i["result_time"].startswith(day))
                      for day in ("2026-11-01", "2026-11-08", "2026-11-09", "2026-11-10", "2026-11-20", "2026-11-25")]
        assert by_message == expected
        assert expected[2] == [] and expected[4] == []  # a repeat of the same state, and a normal result: none
        # the same results sent again create nothing new
        assert [a["code"] for a in exchange(port, messages)] == ["AA"] * len(messages)
        wait_judged(app)
        again = httpx.get(f"{base}/api/worklist", params={"patient": "FEED-1"}, headers=auth).json()
        assert [i["item_id"] for i in again] == [i["item_id"] for i in items]
        assert {"patient_id", "level", "code", "message", "result_time", "received_at"} <= set(items[0])
        # acknowledging removes the item from the open list, records who and when, and is audited
        first = items[0]
        acked = httpx.post(f"{base}/api/worklist/{first['item_id']}/ack", headers=auth).json()
        assert acked["status"] == "acknowledged" and acked["acked_by"] == "nurse-a" and acked["acked_at"]
        still_open = httpx.get(f"{base}/api/worklist", params={"patient": "FEED-1"}, headers=auth).json()
        assert first["item_id"] not in [i["item_id"] for i in still_open]
        everything = httpx.get(f"{base}/api/worklist", params={"status": "all"}, headers=auth).json()
        assert first["item_id"] in [i["item_id"] for i in everything]
        audit = read(app, "SELECT actor, action, patient_id, outcome FROM audit WHERE action = 'worklist.ack'")
        assert audit == [("nurse-a", "worklist.ack", "FEED-1", "ok")]
        missing = httpx.post(f"{base}/api/worklist/999999/ack", headers=auth)
        assert missing.status_code == 404


def test_worklist_api_needs_the_read_role_and_filters(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    auth = {"Authorization": f"Bearer {token(db, 'read', 'nurse-b')}"}
    with feed_service(db) as (base, app, port):
        _seed(app)
        assert httpx.get(f"{base}/api/worklist").status_code == 401
        assert httpx.post(f"{base}/api/worklist/1/ack").status_code == 401
        everything = httpx.get(f"{base}/api/worklist", headers=auth).json()
        assert [(i["patient_id"], i["level"]) for i in everything] == [
            ("OLD-CRIT", "critical"), ("NEW-CRIT", "critical"), ("OLD-WARN", "warning")]
        warnings = httpx.get(f"{base}/api/worklist", params={"level": "warning"}, headers=auth).json()
        assert [i["patient_id"] for i in warnings] == ["OLD-WARN"]
        one = httpx.get(f"{base}/api/worklist", params={"patient": "NEW-CRIT"}, headers=auth).json()
        assert [i["patient_id"] for i in one] == ["NEW-CRIT"]
        assert httpx.get(f"{base}/api/worklist", params={"level": "bogus"}, headers=auth).status_code == 422
        del port


def _seed(app: Any) -> None:
    """Three items written as the judge writes them: an old warning, an old and a new critical."""
    now = datetime.now(UTC)
    rows = [("OLD-WARN", "severe_neutropenia", "warning", now - timedelta(hours=3)),
            ("NEW-CRIT", "severe_neutropenia", "critical", now - timedelta(minutes=1)),
            ("OLD-CRIT", "hyperleukocytosis", "critical", now - timedelta(hours=2))]

    def insert(con: Any) -> None:
        for n, (pid, code, level, received) in enumerate(rows, start=1):
            con.execute("INSERT INTO worklist (patient_id, code, level, message, result_time, received_at, inbox_id, "
                        "created_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open')",
                        [pid, code, level, f"{code} for {pid}", received, received, n, received])

    app.state.writer.run_sync(insert)


def test_worklist_page_order_overdue_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEUKOWATCH_WORKLIST_OVERDUE_MINUTES", "30")
    db = tmp_path / "store.duckdb"
    auth = {"Authorization": f"Bearer {token(db, 'read', 'nurse-c')}"}
    with feed_service(db) as (base, app, _):
        _seed(app)
        unsigned = httpx.get(f"{base}/worklist", follow_redirects=False)
        assert unsigned.status_code in (302, 303, 307) and "/login" in unsigned.headers["location"]
        page = httpx.get(f"{base}/worklist", headers=auth)
    assert page.status_code == 200
    assert page.headers["refresh"] == "60" and page.headers["cache-control"] == "no-store"
    html = page.text
    order = re.findall(r'<a href="/patients/([A-Z-]+)">', html)
    assert order == ["OLD-CRIT", "NEW-CRIT", "OLD-WARN"]
    rows = dict(re.findall(r'<tr class="level-\w+( overdue)?" id="item-(\d+)">', html)[i][::-1] for i in range(3))
    overdue = {item for item, mark in rows.items() if mark}
    assert overdue == {"3"}  # only the open critical item older than 30 minutes
    assert re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html) is None  # no inline script (CSP)
    assert 'action="/api/worklist/1/ack"' in html


def test_signed_in_browser_acknowledges_from_the_page(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    token(db, "read", "ward-nurse")
    with feed_service(db) as (base, app, _):
        _seed(app)
        with httpx.Client(base_url=base) as browser:
            signed = browser.get("/login", params={"token": token_for(app), "next": "/worklist"}, follow_redirects=True)
            assert signed.status_code == 200 and "Worklist" in signed.text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', signed.text)
            assert csrf, "the Acknowledge form carries the session's CSRF token"
            forged = browser.post("/api/worklist/3/ack", data={"csrf_token": "wrong"}, follow_redirects=False)
            assert forged.status_code == 403
            done = browser.post("/api/worklist/3/ack", data={"csrf_token": csrf.group(1)}, follow_redirects=False)
            assert done.status_code == 303 and done.headers["location"] == "/worklist"
            page = browser.get("/worklist").text
        acked = read(app, "SELECT status, acked_by FROM worklist WHERE item_id = 3")
    assert acked == [("acknowledged", "startup-link")]
    assert 'id="item-3"' not in page and 'id="item-2"' in page


def token_for(app: Any) -> str:
    """The sign-in link's token, as `leukowatch serve` prints it at start-up."""
    return app.state.auth.startup_token()


def test_history_from_files_counts_as_the_previous_result(tmp_path: Path) -> None:
    """A person first known from an ingested file: the feed's first result for them creates an item
    only for alerts that the stored history's latest result did not already have."""
    db = tmp_path / "store.duckdb"
    earlier = tmp_path / "earlier.hl7"
    earlier.write_text(oru("FILE-1", patient="HX", when="202611010800", wbc=1.2, anc=0.3), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "leukowatch.cli", "ingest", str(earlier), "--db", str(db)], check=True,
                   capture_output=True)
    auth = {"Authorization": f"Bearer {token(db, 'read', 'nurse-d')}"}
    with feed_service(db) as (base, app, port):
        same = exchange(port, [oru("HX-2", patient="HX", when="202611020800", wbc=1.2, anc=0.3)])
        wait_judged(app)
        after_same = httpx.get(f"{base}/api/worklist", params={"patient": "HX"}, headers=auth).json()
        later = exchange(port, [oru("HX-3", patient="HX", when="202611100800", wbc=6.0, anc=3.5),
                                oru("HX-4", patient="HX", when="202611200800", wbc=1.2, anc=0.3)])
        wait_judged(app)
        after_drop = httpx.get(f"{base}/api/worklist", params={"patient": "HX"}, headers=auth).json()
    assert [a["code"] for a in same + later] == ["AA"] * 3
    assert after_same == []  # the file's result already had this alert
    assert after_drop and {i["result_time"][:10] for i in after_drop} == {"2026-11-20"}


def test_a_corrected_result_replaces_the_one_it_corrects(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    auth = {"Authorization": f"Bearer {token(db, 'read', 'nurse-e')}"}
    low = oru("CX-1", patient="CX", when="202611050800", wbc=1.1, anc=0.3)
    corrected = oru("CX-2", patient="CX", when="202611050800", wbc=6.1, anc=3.4).replace("||||F|||", "||||C|||")
    again = oru("CX-3", patient="CX", when="202611120800", wbc=1.1, anc=0.3)
    with feed_service(db) as (base, app, port):
        assert [a["code"] for a in exchange(port, [low, corrected, again])] == ["AA"] * 3
        wait_judged(app)
        items = httpx.get(f"{base}/api/worklist", params={"patient": "CX"}, headers=auth).json()
        state = read(app, "SELECT alerts FROM feed_alert_state WHERE patient_id = 'CX'")
    # the low count was corrected to a normal one, so the next low count is new again
    assert sorted(i["result_time"][:10] for i in items) == ["2026-11-05", "2026-11-12"]
    assert state and state[0][0] != "[]"


def _temperature(control_id: str, patient: str, when: str, celsius: float) -> str:
    """An ORU^R01 with one body temperature and no count, as a vital-signs system sends it."""
    return "\r".join([
        f"MSH|^~\\&|VITALS|WARDSYS|LEUKOWATCH|WARD|{when}||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||{patient}^^^CITYLAB^MR||DOE^ALEX||19700101|F",
        f"OBR|1|V-{control_id}|V-{control_id}|8716-3^Vital signs^LN|||{when}",
        f"OBX|1|NM|8310-5^Body temperature^LN||{celsius}|Cel|||||F|||{when}",
    ])


def _febrile(app: Any, patient: str) -> list[tuple]:
    return read(app, "SELECT level, result_time FROM worklist WHERE patient_id = ? AND code = 'febrile_neutropenia'",
                [patient])


def test_a_temperature_sent_after_the_counts_rejudges_their_draw(tmp_path: Path) -> None:
    """Vitals come from another system, minutes after the counts: the stored draw of that day is
    judged again with the temperature, once; another day's or a normal temperature raises nothing."""
    db = tmp_path / "store.duckdb"
    counts = {p: oru(f"{p}-1", patient=p, when="202611050800", wbc=1.1, anc=0.3) for p in ("FT", "FD", "FN")}
    with feed_service(db) as (_, app, port):  # the counts are judged, then the service stops
        assert [a["code"] for a in exchange(port, list(counts.values()))] == ["AA"] * 3
        wait_judged(app)
    with feed_service(db) as (_, app, port):  # so the judge reads the draw from the store, not its memory
        acks = exchange(port, [_temperature("FT-T1", "FT", "202611050840", 38.9),
                               _temperature("FD-T1", "FD", "202611060840", 38.9),  # the day after the draw
                               _temperature("FN-T1", "FN", "202611050840", 37.2)])  # no fever
        wait_judged(app)
        first = _febrile(app, "FT")
        # a second fever that day, the counts again (other content: a new message) and the first
        # temperature resent add nothing: the draw already has the item
        acks += exchange(port, [_temperature("FT-T2", "FT", "202611051200", 39.4),
                                counts["FT"].replace("FT-1", "FT-1B"), _temperature("FT-T1", "FT", "202611050840", 38.9)])
        wait_judged(app)
        items = read(app, "SELECT patient_id, code, level FROM worklist ORDER BY item_id")
        stored = read(app, "SELECT patient_id, temperature_c FROM temperatures ORDER BY patient_id, time")
    assert [a["code"] for a in acks] == ["AA"] * 6 and not any("err" in a for a in acks)
    assert [(level, when.isoformat()[:16]) for level, when in first] == [("critical", "2026-11-05T08:00")]
    assert [i for i in items if i[1] == "febrile_neutropenia"] == [("FT", "febrile_neutropenia", "critical")]
    assert stored == [("FD", 38.9), ("FN", 37.2), ("FT", 38.9), ("FT", 39.4)]


def test_a_temperature_sent_before_the_counts_counts_for_their_draw(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    with feed_service(db) as (_, app, port):
        acks = exchange(port, [_temperature("FB-T1", "FB", "202611050730", 38.9)])
        wait_judged(app)  # judged alone: no count to judge it with yet
        acks += exchange(port, [oru("FB-1", patient="FB", when="202611050800", wbc=1.1, anc=0.3)])
        wait_judged(app)
        febrile = _febrile(app, "FB")
    assert [a["code"] for a in acks] == ["AA", "AA"]
    assert [level for level, _ in febrile] == ["critical"]
