"""The durable inbox of the lab feed: decide each message's acknowledgement, store it before the ACK.

Why an inbox: an interface engine deletes a message from its queue once it has our AA, so the AA
must mean "on disk". Storing the raw message first and judging it afterwards (judge.py reads the
inbox in arrival order) keeps the ACK fast and still loses nothing: a crash after the ACK leaves the
message in the inbox, and the judge picks it up on restart.

`classify` reads a message the way `leukowatch ingest` does (io/hl7v2.py) and says AA, AE or AR:
AR when it is not an ORU^R01 or cannot be parsed, AE when it parsed but nothing could be stored (no
patient, no result readable), with the segment and field that stopped it. AE and AR messages are
kept too, as the error queue an operator reviews, but never judged.

`InboxBatcher` is group commit: the messages that arrive while a store transaction is running (from
several connections) are stored together in the next one, so a commit's cost (a WAL sync) is paid
once per batch, not once per message, and each message is ACKed only after its batch committed.
A batch waits up to `LINGER_S` for the other connected peers' messages (never when every peer is
already waiting), because each commit costs the one writer about 2 ms whatever its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..io.hl7v2 import read_hl7, strip_framing
from ..io.store import StoreBusy, birth_dates, inbox_key, store_refusal
from ..model import InputError
from .ack import AckError, Header, read_header
from .background import Background

if TYPE_CHECKING:
    import duckdb

    from ..io.result import ReadResult, Reject
    from .writer import StoreWriter

log = logging.getLogger("leukowatch.feed")

#: At most this many read results wait in memory for the judge (beyond, the judge reads the raw text).
PARSED_KEPT = 10_000
#: How long a commit waits for the messages of connected peers that have not sent theirs yet. Each
#: peer waits for its ACK before it sends the next message, so a batch can never hold more messages
#: than there are connections; without this wait, five connections gave batches of 2.5 messages on
#: average and the inbox commits took most of the writer's time (bench/mllp.py).
LINGER_S = 0.002
#: Inbox statuses: judged later / kept for review only.
STORED, ERROR = "stored", "error"
_LOCATOR = re.compile(r"^(?:message \d+ )?(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<seq>\d+)\])?(?:-(?P<field>\d+))?")
#: HL7 table 0357 message error condition codes used here.
_SEGMENT_SEQUENCE = ("100", "Segment sequence error")
_REQUIRED_MISSING = ("101", "Required field missing")
_DATA_TYPE = ("102", "Data type error")
_TABLE_VALUE = ("103", "Table value not found")
_UNSUPPORTED_TYPE = ("200", "Unsupported message type")
_UNSUPPORTED_EVENT = ("201", "Unsupported event code")
_LOCKED = ("206", "Application record locked")
_INTERNAL = ("207", "Application internal error")


@dataclass(frozen=True)
class Arrival:
    """One received message and what to answer: `code` AA (store and judge), AE or AR; `warnings`,
    the results of an AA'd message that will not be stored (sent as ERR segments of severity W)."""

    raw: str
    header: Header
    code: str
    error: AckError | None
    patient_id: str | None
    content_sha256: str
    received_at: datetime
    result: ReadResult | None = None
    warnings: tuple[AckError, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        """The idempotency key: sending facility, MSH-10, content."""
        return (self.header.sending_facility, self.header.control_id, self.content_sha256)


def _error(code: tuple[str, str], segment: str, field: int, message: str, sequence: int = 1) -> AckError:
    return AckError(segment, sequence, field, code[0], code[1], message)


def _located(locator: str, problem: str, code: tuple[str, str]) -> AckError:
    """An AckError at a reader locator such as "OBX[2]-5" or "PID-7"."""
    m = _LOCATOR.match(locator)
    if m is None:
        return _error(code, "MSH", 0, f"{locator}: {problem}")
    return _error(code, m["seg"], int(m["field"] or 0), f"{locator}: {problem}", int(m["seq"] or 1))


def classify(raw: str, received_at: datetime | None = None) -> Arrival:
    """Read one message (the text of one MLLP block) and decide its acknowledgement: AA when the
    store will keep at least one of its results or body temperatures (`io.store.store_refusal`, the
    store's own rule), so an AA'd message always adds something to the person's history."""
    text = strip_framing(raw).strip("\r")
    received = received_at or datetime.now(UTC)
    header = read_header(text)
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def answer(code: str, error: AckError | None, patient: str | None = None, result: ReadResult | None = None,
               warnings: tuple[AckError, ...] = ()) -> Arrival:
        return Arrival(text, header, code, error, patient, digest, received, result, warnings)

    if not header.valid:
        return answer("AR", _error(_SEGMENT_SEQUENCE, "MSH", 1, "not an HL7 v2 message: no MSH segment first"))
    kind, event = header.type_parts()
    if kind != "ORU":
        return answer("AR", _error(_UNSUPPORTED_TYPE, "MSH", 9, f"expected ORU^R01, got {header.message_type!r}"))
    if event and event != "R01":
        return answer("AR", _error(_UNSUPPORTED_EVENT, "MSH", 9, f"expected ORU^R01, got {header.message_type!r}"))
    if not header.control_id.strip():  # the sender could not match the ACK, and a resend could not be told apart
        return answer("AR", _error(_REQUIRED_MISSING, "MSH", 10, "MSH-10: no message control id"))
    if text.count("\rMSH" + header.field_sep) > 0:
        return answer("AR", _error(_SEGMENT_SEQUENCE, "MSH", 0, "more than one message in one MLLP block"))
    try:
        result = read_hl7(text, source="mllp")
    except InputError as err:
        if err.field.endswith("MSH") or err.field.startswith("line"):
            return answer("AR", _located(err.field, err.problem, _SEGMENT_SEQUENCE))
        return answer("AE", _located(err.field, err.problem, _DATA_TYPE))
    if not re.search(r"(?:^|\r)PID" + re.escape(header.field_sep), text):
        return answer("AE", _error(_SEGMENT_SEQUENCE, "PID", 0, "no PID segment: a result must name its patient"))
    patient = next((p.id for p in result.patients if p.id), None)
    if patient is None:
        return answer("AE", _error(_REQUIRED_MISSING, "PID", 3, "PID-3: no patient identifier"))
    born = birth_dates(result)
    named = [(i.locator, i.observation.patient_id, i.observation.time) for i in result.items if i.observation.patient_id]
    named += [(t.locator, t.patient_id, t.time) for t in result.temperatures if t.patient_id]
    refusals = [(locator, when, store_refusal(pid, when, born.get(pid or ""), received)) for locator, pid, when in named]
    if any(reason is None for *_, reason in refusals):  # a temperature alone is enough: it re-judges the draw
        warnings = [_time_refused(*r) for r in refusals if r[2] is not None]
        warnings += [_rejected(r, f"not stored: {r.reason}") for r in result.rejects if r.kind == "invalid"]
        return answer("AA", None, patient, result, tuple(warnings))
    if refusals:  # every readable result is undated, dated in the future or before birth: none can join a history
        return answer("AE", _time_refused(*refusals[0]), patient)
    rejects = [r for r in result.rejects if r.kind == "invalid"] or list(result.rejects)
    if not rejects:
        return answer("AE", _error(_SEGMENT_SEQUENCE, "OBX", 0, "no OBX result segment"), patient)
    return answer("AE", _rejected(rejects[0], f"no result could be read ({rejects[0].reason})"), patient)


def _time_refused(locator: str, when: datetime | None, reason: str | None) -> AckError:
    """The error for a result the store refuses for its time (OBX-14): none, in the future, before birth."""
    if when is None:
        return _located(f"{locator}-14", "no observation time (OBX-14 or OBR-7)", _REQUIRED_MISSING)
    return _located(f"{locator}-14", str(reason), _DATA_TYPE)


def _rejected(reject: Reject, problem: str) -> AckError:
    """The error for a result the reader could not read, at its field (OBX-3: a code not in the table)."""
    return _located(reject.locator, problem, _TABLE_VALUE if reject.locator.endswith("-3") else _DATA_TYPE)


def not_stored(arrival: Arrival, exc: Exception) -> Arrival:
    """The AE owed when the store could not take a message (another process holds it, or the write
    failed): the sender keeps the message and resends it (nothing is lost; see docs/lab-feed.md)."""
    if isinstance(exc, StoreBusy):
        error = _error(_LOCKED, "MSH", 10, f"store busy ({exc.problem}); resend the message")
    else:
        error = _error(_INTERNAL, "MSH", 10, f"could not store the message ({exc.__class__.__name__}); resend it")
    return Arrival(arrival.raw, arrival.header, "AE", error, arrival.patient_id, arrival.content_sha256,
                   arrival.received_at)


def store_arrivals(con: duckdb.DuckDBPyConnection, arrivals: list[Arrival]) -> list[bool]:
    """Insert the arrivals not stored before (inside the caller's transaction); True where new.

    A message resent with the same facility, MSH-10 and content is found here and not stored
    again, so its second ACK is an AA for the same row. Messages to judge get status 'stored',
    AE/AR ones 'error' (the review queue).
    """
    if not arrivals:
        return []
    keys = [inbox_key(*a.key) for a in arrivals]
    distinct = list(dict.fromkeys(keys))
    found = con.execute(  # a SELECT then a plain INSERT: faster in DuckDB than INSERT ... ON CONFLICT
        f"SELECT dedup_key FROM feed_inbox WHERE dedup_key IN ({', '.join(['?'] * len(distinct))})",
        distinct).fetchall()
    seen = {r[0] for r in found}
    new: list[bool] = []
    rows: list[list[Any]] = []
    for a, key in zip(arrivals, keys, strict=True):
        fresh = key not in seen
        seen.add(key)
        new.append(fresh)
        if fresh:
            h = a.header
            rows.append([h.control_id, h.sending_app, h.sending_facility, a.content_sha256, a.raw, a.received_at,
                         STORED if a.code == "AA" else ERROR, a.code, a.error.message if a.error else None,
                         a.patient_id, key])
    if rows:
        con.execute("INSERT INTO feed_inbox (control_id, sending_app, sending_facility, content_sha256, raw, "
                    "received_at, status, ack_code, error, patient_id, dedup_key) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows)), [v for r in rows for v in r])
    return new


class InboxBatcher(Background):
    """Group commit onto the store's writer; `await store(arrival)` returns once it is durable.

    `on_stored` is called (on the event loop) after each commit that stored a message to judge, so
    the judge wakes up without polling.
    """

    name = "leukowatch-inbox"

    def __init__(self, writer: StoreWriter, on_stored: Any = None, max_batch: int = 200,
                 parsed: dict[tuple[str, str, str], ReadResult] | None = None,
                 peers: Callable[[], int] | None = None, linger_s: float = LINGER_S) -> None:
        super().__init__()
        self.writer = writer
        self.on_stored = on_stored
        self.max_batch = max_batch
        #: How many connections are open (each may send one message per ACK); None: do not wait.
        self.peers = peers
        self.linger_s = linger_s
        #: Where newly stored messages' read results are left for the judge (bounded; optional).
        self.parsed = parsed if parsed is not None else {}
        self._pending: list[tuple[Arrival, asyncio.Future[Arrival]]] = []

    async def store(self, arrival: Arrival) -> Arrival:
        """Store `arrival` durably; returns the arrival to acknowledge (an AE when the store is busy)."""
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._pending.append((arrival, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._linger()
            while self._pending:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                await self._commit(batch)

    async def _linger(self) -> None:
        """Wait (at most `linger_s`) until every connected peer has a message pending."""
        if self.peers is None or not self._pending:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while len(self._pending) < min(self.peers(), self.max_batch):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
            self._wake.clear()

    async def _commit(self, batch: list[tuple[Arrival, asyncio.Future[Arrival]]]) -> None:
        arrivals = [a for a, _ in batch]
        try:
            fresh = await self.writer.run(lambda con: store_arrivals(con, arrivals))
        except Exception as exc:  # noqa: BLE001 - a failed commit must still answer every sender
            log.error("inbox commit failed: %s", exc.__class__.__name__)
            for a, future in batch:
                if not future.done():
                    future.set_result(not_stored(a, exc) if a.code == "AA" else a)
            return
        for a, new in zip(arrivals, fresh, strict=True):
            if new and a.code == "AA" and a.result is not None and len(self.parsed) < PARSED_KEPT:
                self.parsed[a.key] = a.result
        for a, future in batch:
            if not future.done():
                future.set_result(a)
        if self.on_stored is not None and any(a.code == "AA" for a in arrivals):
            self.on_stored()
