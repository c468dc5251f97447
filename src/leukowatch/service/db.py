"""The service's handle on the DuckDB store (`leukowatch.io.store`), opened on first use.

One connection per process, one cursor per request: DuckDB connections are not safe to share
between threads, cursors are. Opening lazily keeps `/api/assess` and the CDS hooks independent of
the store (and of duckdb's import time) for deployments that never use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Store:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._con: Any = None
        self._lock = threading.Lock()

    def cursor(self) -> Any:
        """A fresh cursor on the store (the caller closes it)."""
        with self._lock:
            if self._con is None:
                from ..io.store import open_store

                self._con = open_store(self.path)
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @contextmanager
    def exclusive(self) -> Iterator[str]:
        """The store's path with this process's connection closed (and new cursors held back), for
        readers that open the file themselves, such as the population screen (DuckDB refuses a second
        connection to one file with a different configuration)."""
        from ..io.store import default_db_path

        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            yield str(self.path or default_db_path())

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
