"""Reading a file a user sent, off the threads every request shares.

Starlette runs the blocking part of each request (the runner API's database work among
them) on one pool of 40 threads. Reading a user's .blend takes seconds: Blender opening
it for blend-info (up to two minutes), or BAT reading a tiled job's views in a child
held to limits (up to 30 s for a crafted file). Such reads run two at a time, since each
may take a gigabyte or more; the ones waiting for their turn used to wait on a thread of
that pool, so 45 crafted tiled submissions held all 40 threads for half a minute and a
runner's heartbeat, like every other request, waited 28 s meanwhile. Here they wait on
the event loop, which costs no thread, and run on a limiter of their own.

A read that waits longer than `WAIT_SECONDS` for its turn is not run: `FileReadsBusy`,
which the routes answer `503` with `Retry-After` (nothing is created), rather than a
queue that grows for as long as someone sends files faster than they can be read.

One turn-taking for every kind of read, per manager process: what it bounds is the
memory of reads at once, whoever asked and why. Other heavy work on users' files takes
turns the same way on instances of its own (`doing` names it in the 503): unpacking a
project's zip (`context.unpacks`), making a frame's thumbnail (`context.thumbnails`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
import structlog
from starlette.concurrency import run_in_threadpool

READS_AT_ONCE = 2
"""Reads of users' files at a time in one manager process."""
WAIT_SECONDS = 60.0
"""How long a read waits for its turn before the request is answered 503."""
RETRY_AFTER_SECONDS = 30
READING = "reading other uploaded files"
"""What the manager is busy doing, in a refused read's 503 (`FileReads.doing`)."""

Result = TypeVar("Result")

log = structlog.get_logger(__name__)


class FileReadsBusy(RuntimeError):
    """Every turn stayed taken for `WAIT_SECONDS`: the request should be sent again."""

    def __init__(self, at_once: int, waited: float, doing: str = READING) -> None:
        super().__init__(
            f"the manager is busy {doing} ({at_once} at a time) and "
            f"this one waited {waited:g} s for its turn; send it again in "
            f"{RETRY_AFTER_SECONDS} s"
        )


class FileReads:
    """Where the routes run a read of a user's file (`run`): `at_once` at a time, the
    others waiting, without a thread, for up to `wait` seconds."""

    def __init__(
        self, at_once: int = READS_AT_ONCE, wait: float = WAIT_SECONDS, doing: str = READING
    ) -> None:
        self.at_once = at_once
        self.wait = wait
        self.doing = doing
        self._turns = anyio.Semaphore(at_once)
        self._threads = anyio.CapacityLimiter(at_once)

    async def run(self, read: Callable[[], Result], *, in_turn: bool = True) -> Result:
        """`read`'s result, run in its turn; with `in_turn=False` (a request that, this
        time, reads no user's file: an untiled job's submission) on the shared threads
        at once, as any request's blocking part."""
        if not in_turn:
            return await run_in_threadpool(read)
        with anyio.move_on_after(self.wait) as waiting:
            await self._turns.acquire()
        if waiting.cancelled_caught:
            log.warning("a read of an uploaded file waited too long for its turn: refused",
                        busy=self.doing, at_once=self.at_once,
                        waited_seconds=self.wait)  # fmt: skip
            raise FileReadsBusy(self.at_once, self.wait, self.doing)
        try:
            return await anyio.to_thread.run_sync(read, limiter=self._threads)
        finally:
            self._turns.release()

    @property
    def waiting(self) -> int:
        """Reads waiting for their turn."""
        return self._turns.statistics().tasks_waiting
