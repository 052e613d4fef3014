"""The one retry policy for calls to the manager.

A manager restart must not lose work: workers (and long CLI waits) keep trying with
exponential backoff while the manager is unreachable or answers 5xx/429, for a bounded
time, and stop early when the caller is shutting down. Errors that waiting cannot fix
(4xx) are raised at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.client.errors import is_retryable

_T = TypeVar("_T")
log: FilteringBoundLogger = structlog.get_logger(__name__)


class RetryAborted(Exception):
    """The caller's stop event was set while waiting to retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: `give_up_after` seconds in total (None: forever)."""

    give_up_after: float | None = 300.0
    first_delay: float = 0.5
    max_delay: float = 10.0

    def delays(self) -> Callable[[int], float]:
        def delay(attempt: int) -> float:
            return float(min(self.max_delay, self.first_delay * 2**attempt))

        return delay


Retrying = Callable[[Exception, float], None]
"""Told of each retryable failure, with the seconds until the next try: what a person
watching is shown (the CLI's "manager unreachable, retrying") where a log line is not."""


QUIET: FilteringBoundLogger = structlog.wrap_logger(
    structlog.ReturnLogger(),
    processors=[],
    wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
)
"""A logger that says nothing: for the CLI, whose person sees retries through `on_retry`
(structlog's default would print them on stdout, among a command's output)."""


def call_with_retry(
    fn: Callable[[], _T],
    what: str,
    policy: RetryPolicy,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    logger: FilteringBoundLogger | None = None,
    on_retry: Retrying | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Call `fn` until it succeeds, a non-retryable error occurs, or time runs out.

    The last retryable error is re-raised when `give_up_after` is spent; `RetryAborted`
    when `stop` is set during a wait (or is set already when a call fails).
    """
    logger = logger or log
    started = clock()
    delay = policy.delays()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            pause = delay(attempt)
            elapsed = clock() - started
            if policy.give_up_after is not None and elapsed + pause > policy.give_up_after:
                logger.warning("giving up", call=what, after_seconds=round(elapsed), error=str(exc))
                raise
            if stop is not None and stop.is_set():  # stopping: no "retrying" to log
                raise RetryAborted(what) from exc
            logger.warning("retrying", call=what, in_seconds=pause, error=str(exc))
            if on_retry is not None:
                on_retry(exc, pause)
            if stop is not None:
                if stop.wait(pause):
                    raise RetryAborted(what) from exc
            else:
                sleep(pause)
            attempt += 1
