"""The one writer of a store: a dedicated thread owning the connection, one transaction per job.

Why: DuckDB lets one process write a file, and concurrent transactions in that process on the same
rows conflict ("Transaction conflict"): twenty results for one new patient sent at once used to
lose nineteen as 500s. Here every write is a job on one queue, run in submission order inside
`BEGIN ... COMMIT` (ROLLBACK on error) on the writer's thread, so jobs never conflict and a
duplicate check made inside a job sees every earlier job's rows.

Contract (REST ingest, the MLLP lab feed, audit rows, tokens all write this way):

    writer = StoreWriter(path)             # app.state.writer in the service
    summary = await writer.run(fn)         # fn(con) -> T, on the writer thread, one transaction
    summary = writer.run_sync(fn)          # the same from a non-async thread
    cur = writer.cursor()                  # a read cursor on the same database (caller closes it)

A file locked by another process raises `StoreBusy` (naming that process when DuckDB does) from
`run`, `run_sync` and `cursor`; the next job tries to open the file again, so the service recovers
as soon as the other process lets go.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import duckdb

from ..io.store import StoreBusy, busy_error, default_db_path, open_store

T = TypeVar("T")

__all__ = ["StoreBusy", "StoreWriter"]

#: How a job runs: in a transaction, on the bare connection, or with the connection closed.
_TX, _RAW, _CLOSED = "transaction", "raw", "closed"
_Job = tuple[Callable[[Any], Any], str, "concurrent.futures.Future[Any]"]


class StoreWriter:
    """Owns the store's read-write connection on one thread; see the module docstring."""

    def __init__(self, path: str | None) -> None:
        self.path = str(path) if path else str(default_db_path())
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, fn: Callable[[duckdb.DuckDBPyConnection], T], transaction: bool = True
               ) -> concurrent.futures.Future[T]:
        """Queue `fn(con)`; the future holds its result or exception (StoreBusy included)."""
        return self._put(fn, _TX if transaction else _RAW)

    def _put(self, fn: Callable[[Any], T], mode: str) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._ensure_thread()
        self._queue.put((fn, mode, future))
        return future

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`fn(con)` in one transaction on the writer thread, awaited without blocking the loop."""
        return await asyncio.wrap_future(self.submit(fn))

    def run_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`fn(con)` in one transaction on the writer thread, waiting for it."""
        return self.submit(fn).result()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A read cursor on the writer's database (DuckDB cursors are safe to use from another thread)."""
        return self.submit(lambda con: con.cursor(), transaction=False).result()

    @contextmanager
    def exclusive(self) -> Iterator[str]:
        """The store's path with the writer's connection closed and the writer paused, for a reader
        that opens the file itself (the population screen). Queued writes wait, none are lost."""
        closed, release = threading.Event(), threading.Event()

        def pause(_: None) -> None:
            closed.set()
            release.wait()

        future = self._put(pause, _CLOSED)
        closed.wait()
        try:
            yield self.path
        finally:
            release.set()
            future.result()

    def close(self) -> None:
        """Finish the queued jobs, then close the connection and stop the thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    # -- the writer thread -----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="leukowatch-store-writer", daemon=True)
                self._thread.start()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = open_store(self.path)  # raises StoreBusy when another process holds the file
        return self._con

    def _close_connection(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._close_connection()
                return
            fn, mode, future = job
            if not future.set_running_or_notify_cancel():
                continue
            if mode == _CLOSED:
                self._close_connection()
                self._settle(future, fn, None)
                continue
            try:
                con = self._connection()
            except StoreBusy as exc:
                future.set_exception(exc)
                continue
            except BaseException as exc:  # noqa: BLE001 - every failure belongs to the job's caller
                future.set_exception(exc)
                continue
            if mode == _RAW:
                self._settle(future, fn, con)
                continue
            try:
                con.execute("BEGIN TRANSACTION")
                value = fn(con)
                con.execute("COMMIT")
            except BaseException as exc:  # noqa: BLE001
                with contextlib.suppress(duckdb.Error):  # a failed statement may have ended it already
                    con.execute("ROLLBACK")
                future.set_exception(busy_error(exc, self.path) or exc)
            else:
                future.set_result(value)

    @staticmethod
    def _settle(future: concurrent.futures.Future[Any], fn: Callable[[Any], Any], con: Any) -> None:
        try:
            future.set_result(fn(con))
        except BaseException as exc:  # noqa: BLE001
            future.set_exception(exc)
