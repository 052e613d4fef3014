"""Change notifications for live views (Server-Sent Events in the web UI and the API).

Routes publish a small `FarmEvent` after each committed change ("job 7 changed",
"runner 3 changed"); subscribers (one per open browser tab) receive them and fetch what
they show. Events carry ids, not data, so a slow subscriber that misses some still ends
up showing the current state, and nothing secret travels on the bus.

The bus is in-process: with several managers sharing a database, each browser sees the
changes made through its own manager at once and the others' on its next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["job", "task", "runner", "output"]
QUEUE_LIMIT = 1000


@dataclass(frozen=True)
class FarmEvent:
    kind: EventKind
    id: int
    job_id: int | None = None


class EventBus:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[FarmEvent]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, event: FarmEvent) -> None:
        """Safe from any thread; a no-op before the app has started."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            loop.call_soon_threadsafe(self._deliver, event)

    def job_changed(self, job_id: int) -> None:
        self.publish(FarmEvent("job", job_id, job_id))

    def runner_changed(self, worker_id: int) -> None:
        self.publish(FarmEvent("runner", worker_id))

    def _deliver(self, event: FarmEvent) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= QUEUE_LIMIT:
                continue  # a stalled subscriber loses events, never the manager's memory
            queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[FarmEvent]]:
        queue: asyncio.Queue[FarmEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
