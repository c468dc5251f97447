"""The MLLP listener of the lab feed, on python-hl7's asyncio MLLP server (`hl7.mllp`).

An interface engine (Mirth, Rhapsody, Cloverleaf) or a laboratory system connects, sends one
ORU^R01 per MLLP block and waits for the ACK before it sends the next. For each block this module
classifies the message (inbox.py), stores it durably through the store's one writer (group commit),
then writes the ACK (ack.py); stored messages are judged afterwards (judge.py). Framing is
python-hl7's (`HL7StreamReader.readblock`, `HL7StreamWriter.writeblock`); this module adds what a
live feed needs around it:

- several connections at once, each served in order (the engine waits for each ACK anyway);
- a bad message never drops the connection: it gets its AR or AE and the next block is read;
- a size limit per message (`max_message_bytes`): a larger block is answered AR, its bytes are
  discarded without being buffered whole, and the connection goes on;
- bytes between blocks (a CR/LF some engines send) are skipped instead of spoiling the next block;
- optional TLS (a certificate and key), for feeds that leave the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import ssl
import sys
from asyncio import LimitOverrunError
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hl7.mllp import HL7StreamProtocol, HL7StreamReader, HL7StreamWriter, InvalidBlockError
from hl7.mllp.streams import START_BLOCK

from ..model import InputError
from .ack import AckError, ack_code_for, build_ack
from .inbox import Arrival, InboxBatcher, classify
from .judge import Judge

if TYPE_CHECKING:
    from .notify import Notifier
    from .writer import StoreWriter

log = logging.getLogger("leukowatch.feed")

DEFAULT_MLLP_PORT = 2575  # the IANA-registered HL7 MLLP port
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
#: How long a graceful stop keeps judging the backlog (the rest is judged at the next start).
DRAIN_TIMEOUT_S = 20.0
#: How much of an oversized block is kept to read its MSH (for MSA-2) before it is discarded.
_HEAD_BYTES = 4096


class FeedReader(HL7StreamReader):
    """python-hl7's reader, keeping the head of an oversized block (its MSH-10 is owed in the AR)
    and skipping stray bytes before a block's start character."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overrun_head = b""
        self.overrun_complete = False

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        try:
            block = await super().readuntil(separator)
        except LimitOverrunError as exc:
            self.overrun_head = bytes(self._buffer[:_HEAD_BYTES])  # type: ignore[attr-defined]
            self.overrun_complete = bool(self._buffer.startswith(separator, exc.consumed))  # type: ignore[attr-defined]
            raise
        start = block.find(START_BLOCK)
        return block[start:] if start > 0 else block


async def start_feed_server(callback: Any, host: str, port: int, limit: int,
                            ssl_context: ssl.SSLContext | None = None) -> asyncio.Server:
    """`hl7.mllp.start_hl7_server` with `FeedReader` as the reader (that function fixes the class)."""
    loop = asyncio.get_running_loop()

    def factory() -> HL7StreamProtocol:
        reader = FeedReader(limit=limit, loop=loop)
        return HL7StreamProtocol(reader, callback, loop=loop)

    return await loop.create_server(factory, host, port, ssl=ssl_context)


@dataclass
class FeedOptions:
    """How the listener runs (the `listen` and `serve --mllp-port` flags)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_MLLP_PORT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    tls_cert: str | None = None
    tls_key: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def _decode(block: bytes) -> tuple[str, str]:
    """Text and encoding: UTF-8 (covers ASCII), else Latin-1 (8859/1, which decodes any byte)."""
    try:
        return block.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return block.decode("latin-1"), "latin-1"


def _oversized(head: bytes, limit: int) -> Arrival:
    text, _ = _decode(head)
    arrival = classify(text.split("\r", 1)[0])  # the MSH only: never parse a truncated message
    error = AckError("MSH", 1, 0, "207", "Application internal error",
                     f"message larger than the limit of {limit} bytes; not stored")
    return Arrival(arrival.raw, arrival.header, "AR", error, None, arrival.content_sha256, arrival.received_at)


def _classify(text: str) -> Arrival:
    """`classify`, with an unexpected reader failure answered AR (207) instead of dropping the
    connection: the engine then shows the message in its error queue."""
    try:
        return classify(text)
    except Exception as exc:  # noqa: BLE001 - any message, however odd, gets an answer
        log.error("message could not be read: %s", exc.__class__.__name__)
        arrival = classify(text.split("\r", 1)[0])
        error = AckError("MSH", 1, 0, "207", "Application internal error",
                         f"the message could not be read ({exc.__class__.__name__})")
        return Arrival(text, arrival.header, "AR", error, None, arrival.content_sha256, arrival.received_at)


def _warm_up() -> None:
    """Import, before listening, what the judge's first write imports: pyarrow for the store's bulk
    inserts, and pandas, which DuckDB imports on the first `register`. About 0.5 s that hold the
    GIL and the store's writer: the first ACKs of a stream waited 270 ms behind it (bench/mllp.py)."""
    for name in ("pyarrow", "pandas"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class LabFeed:
    """The listener, its inbox (group commit), judge and notifier, on one store writer."""

    def __init__(self, writer: StoreWriter, options: FeedOptions, notifier: Notifier | None = None) -> None:
        self.writer = writer
        self.options = options
        self.notifier = notifier
        self.judge = Judge(writer, notifier)
        self.inbox = InboxBatcher(writer, on_stored=self.judge.wake, parsed=self.judge.parsed,
                                  peers=lambda: len(self._connections))
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.port = options.port

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0). A port in use or an
        unreadable certificate is an InputError naming the flag, not a traceback."""
        try:
            context = self.options.ssl_context()
        except (ssl.SSLError, OSError) as exc:
            raise InputError("--mllp-tls-cert", f"cannot use the certificate and key: {exc}") from None
        await asyncio.to_thread(_warm_up)
        try:
            self._server = await start_feed_server(self._connected, self.options.host, self.options.port,
                                                   self.options.max_message_bytes, context)
        except OSError as exc:
            raise InputError(f"{self.options.host}:{self.options.port}",
                             f"cannot listen for MLLP: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.inbox.start()
        self.judge.start()
        if self.notifier is not None:
            self.notifier.start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self.inbox.stop()
        await self.judge.drain(DRAIN_TIMEOUT_S)
        if self.notifier is not None:
            await self.notifier.stop()

    def _connected(self, reader: FeedReader, writer: HL7StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: FeedReader, writer: HL7StreamWriter) -> None:
        discarding = False  # inside the rest of an oversized block
        try:
            while True:
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    return  # the peer closed (possibly mid-block: it never got an ACK, it resends)
                except ValueError:
                    if discarding:
                        discarding = not reader.overrun_complete
                        continue
                    discarding = not reader.overrun_complete
                    await self._answer(writer, _oversized(reader.overrun_head, self.options.max_message_bytes),
                                       "utf-8")
                    continue
                except InvalidBlockError:
                    if discarding:
                        discarding = False  # the tail of the oversized block
                        continue
                    await self._answer(writer, classify(""), "utf-8")
                    continue
                text, encoding = _decode(block)
                arrival = await self.inbox.store(_classify(text))
                await self._answer(writer, arrival, encoding)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _answer(writer: HL7StreamWriter, arrival: Arrival, encoding: str) -> None:
        code = ack_code_for(arrival.header, arrival.code)
        if code is None:
            return
        ack = build_ack(arrival.header, code, arrival.error, warnings=arrival.warnings)
        writer.writeblock(ack.encode(encoding, "replace"))
        await writer.drain()


@contextlib.asynccontextmanager
async def lab_feed_running(app: Any) -> AsyncIterator[LabFeed | None]:
    """Run the listener for the service's lifetime when `serve --mllp-port` asked for it
    (`app.state.lab_feed`), on the service's own store writer: one writer per store."""
    options = getattr(app.state, "lab_feed", None)
    if options is None:
        yield None
        return
    from .notify import Notifier

    writer = getattr(app.state, "writer", None) or app.state.store.writer
    feed = LabFeed(writer, options, Notifier.from_flags(writer, *getattr(app.state, "notify", (None, None))))
    port = await feed.start()
    app.state.feed = feed
    print(f"leukowatch: lab feed (MLLP) listening on {options.host}:{port}", file=sys.stderr, flush=True)
    try:
        yield feed
    finally:
        await feed.stop()


async def run_listener(db: str | None, options: FeedOptions, notify: tuple[str | None, str | None] = (None, None),
                       announce: Any = None) -> None:
    """`leukowatch listen`: the feed alone on its own store writer, until SIGINT/SIGTERM.

    `notify` is (webhook URL, FHIR base), either None. `announce(port)` is called once listening.
    """
    import signal

    from .notify import Notifier
    from .writer import StoreWriter

    writer = StoreWriter(db)
    try:
        writer.run_sync(lambda con: None)  # open (and migrate) the store now: a busy store fails at start
        feed = LabFeed(writer, options, Notifier.from_flags(writer, *notify))
        port = await feed.start()
        if announce is not None:
            announce(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await feed.stop()
    finally:
        writer.close()
