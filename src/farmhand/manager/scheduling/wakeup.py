"""Wake waiting claims the moment work appears, instead of at their next poll.

Claims long-poll: a worker's `GET /api/runner/tasks` waits until there is a task for it.
Code that queues work (a new job, a requeued task) calls `notify()`; waiting claims then
look at the database at once. Work queued by *another* manager sharing the database is
found by the waiting claim's periodic look (`claim_poll_interval`).
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Safe to call from any thread (request handlers run sync code in a pool)."""
        if self._loop is None or self._event is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._set_and_rearm)

    def _set_and_rearm(self) -> None:
        assert self._event is not None
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        if self._event is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
