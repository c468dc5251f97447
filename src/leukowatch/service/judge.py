"""Judging the lab feed as it arrives: inbox message -> stored results -> new worklist items.

Each stored message (inbox status 'stored') is read with the same reader as `leukowatch ingest`,
its results are written to the person's history, and `assess` judges the history with the new
result, as `history` does (`load_patient_request` -> `assess`). The clinical rules stay in
`assess`: this module only compares alert sets. An alert (code, level) the person's previous
result did not already have becomes a worklist item; the person's alert set is then remembered in
`feed_alert_state`, so the same result sent twice, or a result that keeps an alert, adds nothing.
Info-level alerts are remembered but never become items (a normal result creates none).

Messages are judged in inbox order (arrival order), so each person's results are judged in the
order the lab sent them. Progress is the highest judged inbox id (`feed_progress`); a message, its
results, its items, its notices and the progress move in one store transaction, so a crash at
any point judges a message exactly once after restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..assess import assess
from ..io.hl7v2 import read_hl7
from ..io.store import load_patient_request, write_result_in_transaction
from ..model import InputError
from .background import Background

if TYPE_CHECKING:
    import duckdb

    from .notify import Notifier
    from .writer import StoreWriter

log = logging.getLogger("leukowatch.feed")

#: Alert levels that put an item on the worklist (HL7 critical-value call lists act on these).
WORKLIST_LEVELS: tuple[str, ...] = ("critical", "warning")


@dataclass(frozen=True)
class NewItem:
    """A worklist item created by judging (what the notifier sends for critical ones)."""

    item_id: int
    patient_id: str
    code: str
    level: str
    message: str
    result_time: datetime | None
    received_at: datetime


def _alert_keys(alerts: list[Any]) -> dict[tuple[str, str], str]:
    return {(a.code, a.level): a.message for a in alerts}


def _previous(con: duckdb.DuckDBPyConnection, patient_id: str) -> set[tuple[str, str]]:
    """The person's alert set at their latest judged result; for a person known only from files
    (no feed message yet), the assessment of the stored history."""
    row = con.execute("SELECT alerts FROM feed_alert_state WHERE patient_id = ?", [patient_id]).fetchone()
    if row is not None:
        return {(c, lv) for c, lv in json.loads(row[0])}
    try:
        return set(_alert_keys(assess(load_patient_request(con, patient_id)).alerts))
    except InputError:  # no stored results yet
        return set()


def judge_message(con: duckdb.DuckDBPyConnection, inbox_id: int, raw: str, received_at: datetime,
                  content_sha256: str) -> list[NewItem]:
    """Store one inbox message's results and return the worklist items it created (inside the
    caller's transaction)."""
    result = read_hl7(raw, source=f"mllp:{inbox_id}")
    patients = list(dict.fromkeys(i.observation.patient_id for i in result.items if i.observation.patient_id))
    before = {pid: _previous(con, pid) for pid in patients}
    write_result_in_transaction(con, result, f"mllp:{inbox_id}", f"mllp:{content_sha256}", "hl7",
                                reject_future=True)
    items: list[NewItem] = []
    now = datetime.now(UTC)
    for pid in patients:
        try:
            current = _alert_keys(assess(load_patient_request(con, pid)).alerts)
        except InputError:  # every result of this person was rejected (e.g. dated in the future)
            log.info("inbox %s: no stored result to judge", inbox_id)
            continue
        times = [i.observation.time for i in result.items if i.observation.patient_id == pid and i.observation.time]
        result_time = max(times) if times else None
        for (code, level), message in current.items():
            if (code, level) in before[pid] or level not in WORKLIST_LEVELS:
                continue
            row = con.execute(
                "INSERT INTO worklist (patient_id, code, level, message, result_time, received_at, inbox_id, "
                "created_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open') ON CONFLICT DO NOTHING "
                "RETURNING item_id", [pid, code, level, message, result_time, received_at, inbox_id, now]).fetchone()
            if row is not None:
                items.append(NewItem(int(row[0]), pid, code, level, message, result_time, received_at))
        con.execute("INSERT INTO feed_alert_state VALUES (?, ?, ?, ?) ON CONFLICT (patient_id) DO UPDATE SET "
                    "alerts = excluded.alerts, inbox_id = excluded.inbox_id, updated_at = excluded.updated_at",
                    [pid, json.dumps(sorted(current)), inbox_id, now])
    return items


def skip_failed(con: duckdb.DuckDBPyConnection, error: str) -> None:
    """Move the progress mark over the next message, recording why it could not be judged, so one
    message that breaks the judge cannot stop the feed (it stays in the inbox for review)."""
    upto = con.execute("SELECT judged_upto FROM feed_progress").fetchone()[0]  # type: ignore[index]
    row = con.execute("SELECT min(inbox_id) FROM feed_inbox WHERE inbox_id > ?", [upto]).fetchone()
    if row is None or row[0] is None:
        return
    con.execute("UPDATE feed_inbox SET error = ? WHERE inbox_id = ?", [f"not judged: {error}", row[0]])
    con.execute("UPDATE feed_progress SET judged_upto = ?", [row[0]])


def judge_pending(con: duckdb.DuckDBPyConnection, limit: int, notifier: Notifier | None = None) -> int:
    """Judge up to `limit` messages after the progress mark, in arrival order (inside the caller's
    transaction); returns how many inbox rows the mark moved over."""
    upto = con.execute("SELECT judged_upto FROM feed_progress").fetchone()[0]  # type: ignore[index]
    rows = con.execute("SELECT inbox_id, raw, received_at, content_sha256, status FROM feed_inbox "
                       "WHERE inbox_id > ? ORDER BY inbox_id LIMIT ?", [upto, limit]).fetchall()
    for inbox_id, raw, received_at, sha, status in rows:
        if status != "stored":
            continue
        try:
            items = judge_message(con, inbox_id, raw, received_at, sha)
        except InputError as err:  # the reader changed its mind since the ACK (e.g. a newer version)
            con.execute("UPDATE feed_inbox SET error = ? WHERE inbox_id = ?", [f"{err.field}: {err.problem}", inbox_id])
            continue
        if notifier is not None:
            notifier.enqueue(con, [i for i in items if i.level == "critical"])
    if rows:
        con.execute("UPDATE feed_progress SET judged_upto = ?", [rows[-1][0]])
    return len(rows)


class Judge(Background):
    """Runs `judge_pending` on the store's writer whenever the inbox has stored something.

    Small batches keep each writer job short, so the ACKs of new messages (which wait for the
    writer) are not held up behind a long judging run.
    """

    name = "leukowatch-judge"

    def __init__(self, writer: StoreWriter, notifier: Notifier | None = None, batch: int = 16) -> None:
        super().__init__()
        self.writer = writer
        self.notifier = notifier
        self.batch = batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    moved = await self._step()
                except Exception as exc:  # noqa: BLE001 - keep the feed running; retried on the next wake
                    log.error("judging failed: %s", exc.__class__.__name__)
                    await asyncio.sleep(1)
                    self._wake.set()
                    break
                if moved and self.notifier is not None:
                    self.notifier.wake()
                if moved < self.batch:
                    break

    async def _step(self) -> int:
        """One batch; when it fails, the messages one by one, and one that fails alone is skipped
        (with its error recorded) so the rest of the feed is judged."""
        try:
            return await self.writer.run(lambda con: judge_pending(con, self.batch, self.notifier))
        except InputError:
            raise  # StoreBusy: the store is not ours right now; retry later
        except Exception:  # noqa: BLE001
            pass
        try:
            return await self.writer.run(lambda con: judge_pending(con, 1, self.notifier))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            reason = exc.__class__.__name__
        log.error("inbox message not judged: %s", reason)
        await self.writer.run(lambda con: skip_failed(con, reason))
        return 1
