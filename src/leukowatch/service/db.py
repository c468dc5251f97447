"""The service's handle on the DuckDB store (`leukowatch.io.store`), opened on first use.

All access goes through one `StoreWriter` (writer.py): writes as jobs on its thread, reads on
cursors of its connection (DuckDB connections are not safe to share between threads, cursors are).
Opening lazily keeps `/api/assess` and the CDS hooks independent of the store (and of duckdb's
import time) for deployments that never use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .writer import StoreWriter


class Store:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.writer = StoreWriter(path)

    def cursor(self) -> Any:
        """A fresh read cursor on the store (the caller closes it); StoreBusy when another process holds it."""
        return self.writer.cursor()

    def close(self) -> None:
        self.writer.close()

    @contextmanager
    def exclusive(self) -> Iterator[str]:
        """The store's path with this process's connection closed (and the writer paused), for
        readers that open the file themselves, such as the population screen (DuckDB refuses a second
        connection to one file with a different configuration)."""
        with self.writer.exclusive() as path:
            yield path

    def has_patient(self, patient_id: str) -> bool:
        """Whether the store holds this patient (False when the store cannot be opened)."""
        try:
            cur = self.cursor()
        except Exception:  # noqa: BLE001 - a missing/locked store just means "no link"
            return False
        try:
            return cur.execute("SELECT 1 FROM patients WHERE patient_id = ?", [patient_id]).fetchone() is not None
        finally:
            cur.close()
