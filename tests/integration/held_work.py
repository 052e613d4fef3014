"""Stand-ins for slow work that a test holds, and a wait for what they make happen.

Used by the tests of where the manager waits for heavy work on users' files
(test_file_reads.py, test_heavy_work_turns.py): the work is held at a gate, so a test can
look at the manager while every turn is taken, then let it go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Held:
    """A stand-in for heavy work that holds every call until `release`, counting the
    calls that began and the most running at once."""

    def __init__(self, work: Callable[..., Any]) -> None:
        self.work = work
        self.gate = threading.Event()
        self.began = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.began += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.gate.wait(timeout=60)
            return self.work(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1

    def release(self) -> None:
        self.gate.set()


def until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
