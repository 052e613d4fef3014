"""Signals a command turns into a clean stop.

Python ends a process at SIGTERM or SIGHUP at once, without `finally` blocks: a submit
would leave its uploads holding the user's quota, a demo its manager and workers running
with nobody to stop them. Commands that must clean up catch them for a block, as Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

Handler = Callable[[int, Any], None] | int


class Terminated(KeyboardInterrupt):
    """SIGTERM during a submit (the add-on's Cancel, a `kill`): it stops as Ctrl-C stops
    it, what it began to upload freed (client/submission.py), but ends with exit 143
    and without a `--json-events` error: whoever sent it knows (the add-on says "submit
    canceled")."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum
        """The signal that stopped the command: its exit is 128 + it, as a shell's."""


@contextmanager
def handled(handler: Handler, *signals: signal.Signals) -> Iterator[None]:
    """`handler` for `signals` during the block, the previous handlers after it. Only
    where signals can be handled, the main thread; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {one: signal.signal(one, handler) for one in signals}
    try:
        yield
    finally:
        for one, earlier in previous.items():
            signal.signal(one, earlier)


def terminated_as_interrupted(*signals: signal.Signals) -> AbstractContextManager[None]:
    """SIGTERM (or the `signals` given) raises `Terminated` in the block."""

    def stop(signum: int, frame: object) -> None:
        raise Terminated(signum)

    return handled(stop, *(signals or (signal.SIGTERM,)))


def ignored(*signals: signal.Signals) -> AbstractContextManager[None]:
    """`signals` do nothing during the block (a demo's farm stopping: a repeated `kill`
    must not cut that short)."""
    return handled(signal.SIG_IGN, *signals)
