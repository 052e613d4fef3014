"""Turns that hold across the processes of one manager: one holder at a time per lock file.

A manager may run as several server processes on one data dir (`farmhand manager
--processes N`, docs/DESIGN.md), and two requests of one user can land on two of them:
an `asyncio.Lock` alone orders the requests of one process only. A turn here is an
exclusive `flock` on a file in the data dir as well, which the kernel hands from one
holder to the next the moment it is free, whichever process holds it, and releases if
its process dies (no stale lock after a crash or a kill).

`flock` blocks its thread while it waits, so it is taken in a worker thread of its own
(`_WAITERS`, not the pool the routes share: a turn can be waited for as long as someone
else's upload and Blender read take, minutes, and the runners' heartbeats need those
threads), never on the event loop. An `asyncio.Lock` per file stands in front of it, so
the requests of one process queue on the event loop, holding no thread, and at most one
thread per lock file and process waits in `flock`. (Within a process the `flock` alone
would order them too: it belongs to an open file, and each turn opens its own.)

The lock files stay (an empty file each): removing one while another process waits on
it would let a third take a "turn" on a new file beside the held one.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from anyio import CapacityLimiter, to_thread

WAITING_THREADS = 32
"""Threads per process that may wait in `flock` at once (one per lock file, behind its
`asyncio.Lock`); more turns wait for one of them, on the event loop."""

_WAITERS = CapacityLimiter(WAITING_THREADS)
_in_process: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()
"""Each lock file's turn in this process, while someone holds or waits for it."""


def _take(path: Path, held: list[int]) -> None:
    """Open `path` (noting its descriptor in `held` at once, for the caller to close
    whatever happens next) and wait for its exclusive `flock`."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        held.append(os.open(path, flags, 0o600))
    except FileNotFoundError:  # the first turn in a new data dir
        path.parent.mkdir(parents=True, exist_ok=True)
        held.append(os.open(path, flags, 0o600))
    fcntl.flock(held[0], fcntl.LOCK_EX)


@asynccontextmanager
async def turn(path: Path) -> AsyncIterator[None]:
    """Hold the turn of lock file `path`: in this process (its `asyncio.Lock`), then among
    all processes (an exclusive `flock`, waited for in a worker thread).

    A request cancelled while its thread waits in `flock` lets that wait finish (a
    thread cannot be interrupted), then closes the file, which hands the turn on."""
    lock = _in_process.get(path)
    if lock is None:
        lock = _in_process[path] = asyncio.Lock()
    async with lock:
        held: list[int] = []
        try:
            await to_thread.run_sync(_take, path, held, limiter=_WAITERS)
            yield
        finally:
            for fd in held:
                os.close(fd)  # releases the flock
