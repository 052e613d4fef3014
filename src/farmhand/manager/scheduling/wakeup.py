"""Wake waiting claims the moment work appears, instead of at their next poll.

Claims long-poll: a worker's `GET /api/runner/tasks` waits until there is a task for it.
Code that queues work (a new job, a requeued task) calls `notify()`; waiting claims then
look at the database at once. The processes of one manager (`--processes N`) wake each
other's claims through `Siblings` (`share_with`). Work queued by *another* manager
sharing the database, or a wakeup lost on the way, is found by the waiting claim's
periodic look (`claim_poll_interval`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farmhand.manager.siblings import Siblings

SIBLING_TOPIC = "wakeup"


class Wakeup:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._siblings: Siblings | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def share_with(self, siblings: Siblings) -> None:
        """Also wake the claims waiting in the sibling processes on every `notify`, and
        wake this process's claims when a sibling notifies (without passing it on)."""
        self._siblings = siblings
        siblings.on(SIBLING_TOPIC, self._receive)

    def notify(self) -> None:
        """Safe to call from any thread (request handlers run sync code in a pool)."""
        self._notify_here()
        siblings = self._siblings
        if siblings is not None:
            siblings.broadcast(SIBLING_TOPIC, {})

    def _receive(self, message: dict[str, Any]) -> None:
        self._notify_here()

    def _notify_here(self) -> None:
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
