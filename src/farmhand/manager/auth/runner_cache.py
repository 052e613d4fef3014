"""A short-lived memory of which runner secret belongs to which worker.

Every runner request authenticates (claim, progress, upload, complete: four a task), and
looking the secret's hash up is a database transaction each time. The answer changes
only when a worker is deleted, so this manager remembers it for a minute.

Safety: only the SHA-256 of the secret is kept (as in the database), never the secret;
an entry lives at most `ttl` seconds; deleting a worker through this manager forgets
its entries at once (`forget_worker`), and a worker deleted through *another* manager
sharing the database is refused here at the latest `ttl` seconds later — and meanwhile
the routes that need its row find none and answer 401, never act for it. A secret the
database does not know is not remembered, so a registration is usable at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_TTL = 60.0
MAX_ENTRIES = 10_000


class RunnerIdCache:
    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    @property
    def ttl(self) -> float:
        """How long a secret may still be honoured after the database stopped knowing it."""
        return self._ttl

    def get(self, digest: str) -> int | None:
        """The worker id for a secret's hash, if known and fresh."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            worker_id, expires = entry
            if expires <= self._clock():
                del self._entries[digest]
                return None
            return worker_id

    def put(self, digest: str, worker_id: int) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()  # rare (more runners than this): start over
            self._entries[digest] = (worker_id, self._clock() + self._ttl)

    def forget_worker(self, worker_id: int) -> None:
        """The worker was deleted: its secret authenticates nothing from now on."""
        with self._lock:
            for digest in [d for d, (w, _) in self._entries.items() if w == worker_id]:
                del self._entries[digest]
