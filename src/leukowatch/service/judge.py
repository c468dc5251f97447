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
import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from ..assess import assess
from ..io.hl7v2 import read_hl7
from ..io.result import Item, ReadResult, Temperature, draw_day_temperature, utc_day
from ..io.store import (
    birth_dates,
    load_patient_request,
    store_refusal,
    stored_temperatures,
    write_result_in_transaction,
)
from ..model import InputError, Patient, Request
from ..request import parse_request
from .background import Background
from .inbox import STORED

if TYPE_CHECKING:
    import duckdb

    from .notify import Notifier
    from .writer import StoreWriter

log = logging.getLogger("leukowatch.feed")

#: How long the judge waits after being woken, so that messages arriving together are judged (and
#: their results written) as one batch. A judging write holds the store's one writer, and the ACKs
#: of new messages wait behind it: each write has a fixed cost (about 15 ms), so writes must not be
#: too many, and the ACKs that arrive during one wait as long as it lasts, so not too large either.
#: bench/mllp.py (5 connections, about 500 messages/s): 0.25 s gave a lower p99 ACK than 0.5 s in
#: six paired runs out of seven, for about 0.05 ms more CPU per message; the machine was shared, so
#: the difference is smaller than the run-to-run noise of any single pair.
GATHER_S = 0.25
#: At most this many messages per judging write (a backlog after a restart is written in steps,
#: with the ACKs of new messages in between).
JUDGE_BATCH = 250
#: How many people's histories the judge keeps in memory between batches (least recent dropped).
KNOWN_PEOPLE = 20_000
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


@dataclass
class JudgedBatch:
    """What judging a run of inbox messages decided, ready to be written in one transaction."""

    first: int
    last: int
    count: int
    result: ReadResult
    items: list[tuple[str, str, str, str, datetime | None, datetime, int]] = field(default_factory=list)
    states: dict[str, tuple[list[list[str]], int]] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    histories: dict[str, History] = field(default_factory=dict)


class History(NamedTuple):
    """A person's history as the judge holds it: the parsed request (None before any result), the
    alert set, and the body temperatures that can still count (those from the day of the latest draw
    on: a draw only moves later). Parsed once: each new message adds its parsed results to it."""

    request: Request | None
    alerts: set[tuple[str, str]]
    temperatures: list[Temperature]


def _alert_keys(alerts: list[Any]) -> dict[tuple[str, str], str]:
    return {(a.code, a.level): a.message for a in alerts}


def _history(con: duckdb.DuckDBPyConnection, patient_id: str) -> History:
    """The person's stored history (None when there is none), their alert set at the latest judged
    result (for a person known only from files, no feed message yet: the alert set of the stored
    history's assessment) and their stored temperatures."""
    try:
        request: Request | None = parse_request(load_patient_request(con, patient_id))
    except InputError:  # no stored results yet
        request = None
    temperatures = _still_counting(request, stored_temperatures(con, patient_id))
    row = con.execute("SELECT alerts FROM feed_alert_state WHERE patient_id = ?", [patient_id]).fetchone()
    if row is not None:
        return History(request, {(c, lv) for c, lv in json.loads(row[0])}, temperatures)
    return History(request, set(_alert_keys(assess(request).alerts)) if request else set(), temperatures)


def _storable(result: ReadResult, received_at: datetime) -> tuple[list[Item], list[Temperature]]:
    """The results and temperatures the store will keep (`io.store.store_refusal`, the store's own
    rule), so the judge never judges what the store refuses."""
    born = birth_dates(result)

    def kept(patient_id: str | None, when: datetime | None) -> bool:
        return store_refusal(patient_id, when, born.get(patient_id or ""), received_at) is None

    return ([i for i in result.items if kept(i.observation.patient_id, i.observation.time)],
            [t for t in result.temperatures if kept(t.patient_id, t.time)])


def judge_rows(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], known: dict[str, History] | None = None,
               parsed: dict[tuple[str, str, str], ReadResult] | None = None) -> JudgedBatch:
    """Judge inbox rows (as `pending_rows` gives them), oldest first, reading only.

    Each person's history is read once (or taken from `known`, the judge's memory of people it
    judged before); each message then adds its results to it in memory and is assessed, so the
    n-th message of a person is judged with exactly the results that arrived before it. `parsed`
    holds messages the inbox already read at ACK time (popped here, so each is read once).
    """
    batch = JudgedBatch(rows[0][0], rows[-1][0], len(rows), ReadResult("hl7", "mllp"))
    histories = batch.histories
    for inbox_id, raw, received_at, status, facility, control_id, sha in rows:
        if status != STORED:
            continue
        result = (parsed or {}).pop((facility, control_id, sha), None)
        try:
            result = result or read_hl7(raw, source=f"mllp:{inbox_id}")
        except InputError as err:  # the reader changed its mind since the ACK (e.g. a newer version)
            batch.errors.append((inbox_id, f"{err.field}: {err.problem}"))
            continue
        _merge(batch.result, result)
        items, temperatures = _storable(result, received_at)
        people = [i.observation.patient_id for i in items] + [t.patient_id for t in temperatures]
        for pid in dict.fromkeys(str(p) for p in people):
            if pid not in histories:
                histories[pid] = known[pid] if known and pid in known else _history(con, pid)
            history = histories[pid]
            mine = [i for i in items if i.observation.patient_id == pid]
            temps = _still_counting(history.request, [*history.temperatures,
                                                      *(t for t in temperatures if t.patient_id == pid)])
            request = _with_results(history.request, result, pid, mine, temps)
            if request is None:  # a temperature before any count: kept for the draw it may belong to
                histories[pid] = History(None, history.alerts, temps)
                continue
            current = _alert_keys(assess(request).alerts)
            result_time = _result_time(request, mine)
            for (code, level), message in current.items():
                if (code, level) not in history.alerts and level in WORKLIST_LEVELS:
                    batch.items.append((pid, code, level, message, result_time, received_at, inbox_id))
            histories[pid] = History(request, set(current), _still_counting(request, temps))
            batch.states[pid] = (sorted([c, lv] for c, lv in current), inbox_id)
    return batch


def _with_results(request: Request | None, result: ReadResult, pid: str, items: list[Item],
                  temperatures: list[Temperature]) -> Request | None:
    """The person's request with this message's results added as the newest observations, and its
    `temperature_c` the highest temperature of the UTC day of its latest draw (as `load_patient_request`
    sets it; yesterday's fever is not today's). None for a person with no result yet.

    A message with temperatures only re-judges the latest draw: same observations, its day's
    temperature now known. A new result for the same analyte and draw time as a stored one replaces
    it (a corrected or repeated result), as `load_patient_request` lets the latest ingest win among equals."""
    if request is None:
        if not items:
            return None
        request = Request(patient=next((p for p in result.patients if p.id == pid), Patient(id=pid)))
    new = [i.observation for i in items]
    keys = {(o.analyte, o.percent, o.time) for o in new}
    observations = [*(o for o in request.observations if (o.analyte, o.percent, o.time) not in keys), *new]
    temperature_c, _ = draw_day_temperature([o.time for o in observations if o.time is not None], temperatures)
    return replace(request, observations=observations, temperature_c=temperature_c)


def _still_counting(request: Request | None, temperatures: list[Temperature]) -> list[Temperature]:
    """The temperatures that may still be paired with a draw: those from the day of the latest draw
    on (a later draw only moves that day forward), so the judge's memory of a person stays small."""
    draws = [o.time for o in request.observations if o.time is not None] if request is not None else []
    if not draws:
        return temperatures
    day = utc_day(max(draws))
    return [t for t in temperatures if utc_day(t.time) >= day]


def _result_time(request: Request, items: list[Item]) -> datetime | None:
    """The time of the result an item is about: the message's latest result, or for a message of
    temperatures only, the latest draw it re-judged."""
    times = [i.observation.time for i in items if i.observation.time] or \
        [o.time for o in request.observations if o.time is not None]
    return max(times) if times else None


def _merge(into: ReadResult, result: ReadResult) -> None:
    into.read += result.read
    into.items += result.items
    into.rejects += result.rejects
    into.patients += result.patients
    into.temperatures += result.temperatures  # stored for the population screen, as `leukowatch ingest` does


def write_batch(con: duckdb.DuckDBPyConnection, batch: JudgedBatch, notifier: Notifier | None = None) -> list[NewItem]:
    """Store a judged batch in the caller's transaction: its results (one ingest), its worklist
    items, the people's alert states, the progress mark and the notices for critical items."""
    key = hashlib.sha256(f"{batch.first}-{batch.last}".encode()).hexdigest()
    write_result_in_transaction(con, batch.result, f"mllp:{batch.first}-{batch.last}", f"mllp:{key}", "hl7",
                                reject_future=True)
    now = datetime.now(UTC)
    created: list[NewItem] = []
    if batch.items:
        rows = con.execute(
            "INSERT INTO worklist (patient_id, code, level, message, result_time, received_at, inbox_id, created_at, "
            "status) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, 'open')"] * len(batch.items))
            + " RETURNING item_id, patient_id, code, level, message, result_time, received_at",
            [v for item in batch.items for v in (*item, now)]).fetchall()
        created = sorted((NewItem(int(r[0]), *r[1:]) for r in rows), key=lambda i: i.item_id)
    _save_states(con, batch.states, now)
    for inbox_id, error in batch.errors:
        con.execute("UPDATE feed_inbox SET error = ? WHERE inbox_id = ?", [error, inbox_id])
    con.execute("UPDATE feed_progress SET judged_upto = ?", [batch.last])
    if notifier is not None:
        notifier.enqueue(con, [i for i in created if i.level == "critical"])
    return created


def _save_states(con: duckdb.DuckDBPyConnection, states: dict[str, tuple[list[list[str]], int]], now: datetime) -> None:
    """Each person's alert set after the batch: an UPDATE for those seen before, an INSERT for the
    others (DuckDB's INSERT ... ON CONFLICT DO UPDATE took several times longer)."""
    if not states:
        return
    rows = [(pid, json.dumps(alerts), inbox_id) for pid, (alerts, inbox_id) in states.items()]
    seen = {r[0] for r in con.execute("SELECT patient_id FROM feed_alert_state WHERE patient_id IN ("
                                      + ", ".join(["?"] * len(rows)) + ")", [r[0] for r in rows]).fetchall()}
    old, new = [r for r in rows if r[0] in seen], [r for r in rows if r[0] not in seen]
    if old:
        con.execute("UPDATE feed_alert_state SET alerts = v.alerts, inbox_id = v.inbox_id, updated_at = ? FROM (VALUES "
                    + ", ".join(["(?, ?, ?)"] * len(old)) + ") AS v(patient_id, alerts, inbox_id) "
                    "WHERE feed_alert_state.patient_id = v.patient_id", [now, *(v for r in old for v in r)])
    if new:
        con.execute("INSERT INTO feed_alert_state VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(new)),
                    [v for r in new for v in (*r, now)])


def pending_rows(con: duckdb.DuckDBPyConnection, limit: int) -> list[tuple[Any, ...]]:
    """Up to `limit` inbox rows after the progress mark, oldest first."""
    upto = con.execute("SELECT judged_upto FROM feed_progress").fetchone()[0]  # type: ignore[index]
    return [tuple(r) for r in con.execute(
        "SELECT inbox_id, raw, received_at, status, sending_facility, control_id, content_sha256 FROM feed_inbox "
        "WHERE inbox_id > ? ORDER BY inbox_id LIMIT ?", [upto, limit]).fetchall()]


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
    """Read, judge and write up to `limit` pending messages on one connection (inside the caller's
    transaction); returns how many inbox rows the progress mark moved over. The service splits
    these steps (`Judge`) so that only the writing holds the store's writer."""
    rows = pending_rows(con, limit)
    if rows:
        write_batch(con, judge_rows(con, rows), notifier)
    return len(rows)


class Judge(Background):
    """Runs `judge_pending` on the store's writer whenever the inbox has stored something.

    Small batches keep each writer job short, so the ACKs of new messages (which wait for the
    writer) are not held up behind a long judging run.
    """

    name = "leukowatch-judge"

    def __init__(self, writer: StoreWriter, notifier: Notifier | None = None, batch: int = JUDGE_BATCH) -> None:
        super().__init__()
        self.writer = writer
        self.notifier = notifier
        self.batch = batch
        #: Messages the inbox read at ACK time, by (facility, MSH-10, content hash), not read twice.
        self.parsed: dict[tuple[str, str, str], ReadResult] = {}
        self._known: dict[str, History] = {}
        self._foreign_ingests = -1

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_S)  # let a burst gather: one bigger batch costs less than many
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

    async def drain(self, timeout_s: float) -> None:
        """Stop, then judge the backlog for at most `timeout_s` (a graceful shutdown leaves nothing
        unjudged when it can; what is left is judged at the next start)."""
        await self.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                moved = await self._step()
            except Exception:  # noqa: BLE001 - the next start judges it
                return
            if moved < self.batch:
                return

    async def _step(self) -> int:
        """One batch; when it fails, the messages one by one, and one that fails alone is skipped
        (with its error recorded) so the rest of the feed is judged."""
        try:
            return await self._judge(self.batch)
        except InputError:
            raise  # StoreBusy: the store is not ours right now; retry later
        except Exception:  # noqa: BLE001
            pass
        try:
            return await self._judge(1)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            reason = exc.__class__.__name__
        log.error("inbox message not judged: %s", reason)
        await self.writer.run(lambda con: skip_failed(con, reason))
        return 1

    async def _judge(self, limit: int) -> int:
        """Read and assess on a worker thread with a read cursor; write on the writer (a short job,
        so new messages' ACKs do not wait behind the assessments). Only this task moves the
        progress mark, so what it read is still pending when it writes."""
        batch = await asyncio.to_thread(self._read_and_judge, limit)
        if batch is None:
            return 0
        await self.writer.run(lambda con: write_batch(con, batch, self.notifier))
        self._remember(batch)
        return batch.count

    def _read_and_judge(self, limit: int) -> JudgedBatch | None:
        cur = self.writer.cursor()
        try:
            foreign = cur.execute("SELECT count(*) FROM ingests WHERE file NOT LIKE 'mllp:%'").fetchone()[0]  # type: ignore[index]
            if foreign != self._foreign_ingests:  # results came from elsewhere (REST ingest): reload histories
                self._known.clear()
                self._foreign_ingests = foreign
            rows = pending_rows(cur, limit)
            return judge_rows(cur, rows, self._known, self.parsed) if rows else None
        finally:
            cur.close()

    def _remember(self, batch: JudgedBatch) -> None:
        """Keep the histories a written batch ended with (most recently judged people, bounded)."""
        for pid, history in batch.histories.items():
            self._known.pop(pid, None)
            self._known[pid] = history
        while len(self._known) > KNOWN_PEOPLE:
            self._known.pop(next(iter(self._known)))
