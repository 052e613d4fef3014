"""Change notifications for live views (Server-Sent Events in the web UI and the API).

Routes publish a small `FarmEvent` after each committed change ("job 7 changed",
"runner 3 changed"); subscribers (one per open browser tab) receive them and fetch what
they show. Events carry ids, not data, so a slow subscriber that misses some still ends
up showing the current state, and nothing secret travels on the bus.

The bus lives in one process. The processes of one manager (`--processes N`) share
their events through `Siblings` (`share_with`), so a browser sees changes made through
any of them at once; with several managers on different hosts sharing a database, each
browser sees the others' changes on its next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, cast, get_args

import structlog

if TYPE_CHECKING:
    from farmhand.manager.siblings import Siblings

log = structlog.get_logger(__name__)

EventKind = Literal["job", "task", "runner", "output"]
QUEUE_LIMIT = 1000
SIBLING_BATCH_TOPIC = "events"
"""The events a process published during one turn of its event loop, in one datagram."""
SIBLING_BATCH = 200
"""Events per datagram at most (a few KiB, far below a datagram's limit)."""


@dataclass(frozen=True)
class FarmEvent:
    kind: EventKind
    id: int
    job_id: int | None = None


class EventBus:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[FarmEvent]] = set()
        self._siblings: Siblings | None = None
        self._outgoing: dict[FarmEvent, None] = {}
        """Events for the siblings not sent yet, in order, each once."""
        self._outgoing_lock = threading.Lock()
        self._send_scheduled = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def share_with(self, siblings: Siblings) -> None:
        """Also send every published event to the sibling processes, and hand theirs to
        this process's subscribers (only: a received event is not sent on again)."""
        self._siblings = siblings
        siblings.on(SIBLING_BATCH_TOPIC, self._receive_batch)

    def publish(self, event: FarmEvent) -> None:
        """Safe from any thread; a no-op before the app has started."""
        self._publish_here(event)
        if self._siblings is not None:
            self._send_later(event)

    def _send_later(self, event: FarmEvent) -> None:
        """Gather the events of one loop turn into one datagram for the siblings.

        Under load a process publishes hundreds of events a second, many of them the same
        ("job 7 changed"); one datagram each would cost a system call apiece and overflow
        a sibling's socket queue (about ten datagrams on Linux) whenever its loop is busy.
        """
        loop = self._loop
        with self._outgoing_lock:
            self._outgoing[event] = None
            if self._send_scheduled:
                return
            self._send_scheduled = True
        if loop is None or loop.is_closed():
            self._send_now()  # not started yet: nothing to gather with
        else:
            loop.call_soon_threadsafe(self._send_now)

    def _send_now(self) -> None:
        with self._outgoing_lock:
            events, self._outgoing = list(self._outgoing), {}
            self._send_scheduled = False
        siblings = self._siblings
        if siblings is None:
            return
        for start in range(0, len(events), SIBLING_BATCH):
            chunk = events[start : start + SIBLING_BATCH]
            siblings.broadcast(
                SIBLING_BATCH_TOPIC, {"events": [[e.kind, e.id, e.job_id] for e in chunk]}
            )

    def _receive_batch(self, message: dict[str, Any]) -> None:
        events = message.get("events")
        if not isinstance(events, list):
            log.debug("malformed events from a sibling ignored", message=message)
            return
        for item in events:
            if isinstance(item, list) and len(item) == 3:
                self._accept(item[0], item[1], item[2], message)
            else:
                log.debug("malformed event from a sibling ignored", event=item)

    def _accept(self, kind: object, id_: object, job_id: object, message: object) -> None:
        if kind in get_args(EventKind) and _is_int(id_) and (job_id is None or _is_int(job_id)):
            self._publish_here(FarmEvent(cast(EventKind, kind), id_, job_id))
        else:
            log.debug("malformed event from a sibling ignored", message=message)

    def _publish_here(self, event: FarmEvent) -> None:
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


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
