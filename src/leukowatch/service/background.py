"""A background asyncio task that sleeps until woken: the base of the feed's inbox, judge and notifier.

Each of them owns one long-running task on the event loop that waits for an `asyncio.Event`
(`wake()`), does its work through the store's writer, and goes back to waiting. `stop()` cancels it
and waits until it has ended, so a shutdown never leaves a job half-submitted.
"""

from __future__ import annotations

import asyncio
import contextlib


class Background:
    """Subclasses implement `_run()` (a loop around `await self._wake.wait()`)."""

    name = "leukowatch-background"

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Start the task, awake: it first does whatever a previous run left behind (a fresh event:
        an asyncio event belongs to the loop it was first awaited on)."""
        self._wake = asyncio.Event()
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
