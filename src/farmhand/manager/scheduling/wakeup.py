"""Wake waiting claims the moment work appears, instead of at their next poll.

Claims long-poll: a worker's `GET /api/runner/tasks` waits until there is a task for it.
Code that queues work (a new job, a requeued task) calls `notify()`; waiting claims then
look at the database at once. The processes of one manager (`--processes N`) wake each
other's claims through `Siblings` (`share_with`). Work queued by *another* manager
sharing the database, or a wakeup lost on the way, is found by the waiting claim's
periodic look (`claim_poll_interval`).

A manager asked to stop releases its waiting claims too (`wait(..., exiting=...)`): the
server waits for open requests before it stops, and cuts off the ones still open after
its graceful timeout (3 s) with a traceback and a 500 to the worker. A claim that finds
the server stopping is answered "no task", as when its wait ends, and its worker asks
again (by then of a manager that is gone, as it does of any unreachable one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farmhand.manager.siblings import Siblings

SIBLING_TOPIC = "wakeup"

EXIT_POLL_SECONDS = 0.1
"""How often a process whose claims wait asks whether its server is stopping: as often
as uvicorn itself looks, so a claim is answered before uvicorn starts counting down."""


def _never() -> bool:
    return False


class Wakeup:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._siblings: Siblings | None = None
        self._stopping = False
        self._waiting = 0
        self._watcher: asyncio.Task[None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._stopping = False
        self._watcher = None

    @property
    def stopping(self) -> bool:
        """True once a `wait` found the server stopping: claims answer at once from then."""
        return self._stopping

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

    async def wait(self, timeout: float, exiting: Callable[[], bool] = _never) -> None:
        """Return after `timeout`, at the next `notify`, or once `exiting()` is true
        (then `stopping` is true too).

        `exiting` is asked every `EXIT_POLL_SECONDS` by one watcher per process, not by
        every waiting claim, and only while claims wait; every caller passes the same."""
        if self._stopping or exiting():
            self._stopping = True
            return
        if self._event is None:
            await asyncio.sleep(timeout)
            return
        event = self._event
        self._waiting += 1
        if exiting is not _never and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.create_task(self._watch(exiting))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._waiting -= 1

    async def _watch(self, exiting: Callable[[], bool]) -> None:
        """Wake every waiting claim, for good, once the server is stopping."""
        while self._waiting > 0:
            await asyncio.sleep(EXIT_POLL_SECONDS)
            if exiting():
                self._stopping = True
                self._set_and_rearm()
                return
