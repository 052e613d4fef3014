"""The one retry policy for calls to the manager.

A manager restart must not lose work: workers (and long CLI waits) keep trying with
exponential backoff while the manager is unreachable or answers 5xx/429, for a bounded
time, and stop early when the caller is shutting down. Errors that waiting cannot fix
(4xx, a URL no manager answers: `errors.is_retryable`) are raised at once. Each outage
is logged once (`OutageLog`) and told, as it begins and ends, to whoever watches
(`watching_outages`: the add-on's panel, through `farmhand submit --json-events`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


_UNREACHABLE = "the manager does not answer"
"""What keeps an outage open when no call gets an answer at all (`OutageLog`)."""

SAY_EVERY = 300.0
"""Seconds between two lines about one outage: a manager down for an hour leaves a dozen
lines in the worker's log, not one per retry."""


@dataclass(frozen=True)
class Outage:
    """News of an outage for whoever watches (`watching_outages`): it began (`error`,
    the first failure; the call is tried again at most every `retry_every` seconds) or
    it is over (`error` None: the manager answered after `down` seconds)."""

    what: str
    error: Exception | None
    retry_every: float = 0.0
    down: float = 0.0


OutageWatcher = Callable[[Outage], None]

_watchers: list[OutageWatcher] = []
_watchers_lock = threading.Lock()


@contextmanager
def watching_outages(watcher: OutageWatcher) -> Iterator[None]:
    """Tell `watcher` of each outage any `OutageLog` of this process sees begin and end,
    while the block runs (from whichever thread saw it).

    Like a log handler, and for the same reason: the calls that retry (an upload's,
    deep in the submit) are made by code that does not know who is watching, while the
    one who is (`farmhand submit --json-events`, for the add-on's panel) must say it at
    once, not in a log line read after the command ends."""
    with _watchers_lock:
        _watchers.append(watcher)
    try:
        yield
    finally:
        with _watchers_lock:
            _watchers.remove(watcher)


def _tell(news: Outage) -> None:
    with _watchers_lock:
        watchers = list(_watchers)
    for watcher in watchers:
        watcher(news)


class OutageLog:
    """What the log says while the manager does not answer: a WARNING at the first
    failure (retrying, and how often), then at most one line each `every` seconds with
    how long and how many failures, and one INFO line when it answers again
    (`reconnected`, after how many seconds). Each retry used to log a WARNING of its own:
    a manager down for an hour filled a worker's log with hundreds of them.

    One outage may be seen by several loops at once (a worker's claims, heartbeats,
    progress reports and every call of its task share one: each with a log of its own
    announced one outage several times), so it is thread-safe. `fields` of each call
    and its logger's (task, job, worker ids) go into the lines it writes.

    A manager that does not answer at all is over when any call gets an answer. One
    that answers a call with an error (a 500 of its claim, say) is over only when that
    call succeeds: the other loops' answers meanwhile do not end it, or each refused
    claim between two heartbeats would be an outage of its own, two lines every few
    seconds for as long as the error lasts."""

    def __init__(self, every: float = SAY_EVERY, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._said_at = 0.0
        self._failures = 0
        self._answered_at = float("-inf")
        self._failing: set[str] = set()
        """What keeps the outage open: `_UNREACHABLE`, and the calls answered with an
        error."""

    def failed(
        self,
        logger: FilteringBoundLogger,
        what: str,
        error: Exception,
        retry_every: float,
        began: float | None = None,
        **fields: object,
    ) -> None:
        """A retryable failure of the call `what`, made at `began` (by `clock`); it is
        tried again at most every `retry_every` seconds. A call made before the manager
        last answered another loop says nothing new: the outage it saw is over."""
        with self._lock:
            now = self.clock()
            if began is not None and began < self._answered_at:
                return
            refused = getattr(error, "status_code", None) is not None
            self._failing.add(what if refused else _UNREACHABLE)
            self._failures += 1
            if self._since is None:
                self._since = self._said_at = now
                first = True
            elif now - self._said_at >= self.every:
                self._said_at = now
                first = False
            else:
                return
            failures, down = self._failures, round(now - self._since)
        if first:
            _tell(Outage(what, error, retry_every))
        if first and refused:
            logger.warning(
                f"the manager answers {what} with an error; retrying at least every "
                f"{retry_every:g} s (said again at most every {self.every:g} s)",
                call=what,
                error=str(error),
                **fields,
            )
        elif first:
            logger.warning(
                f"the manager does not answer; retrying at least every {retry_every:g} s "
                f"until it does (said again at most every {self.every:g} s)",
                call=what,
                error=str(error),
                **fields,
            )
        else:
            logger.warning(
                f"the manager still does not answer after {down} s; retrying"
                if not refused
                else f"the manager still answers {what} with an error after {down} s; retrying",
                call=what,
                failures=failures,
                error=str(error),
                **fields,
            )

    def answered(
        self, logger: FilteringBoundLogger, what: str | None = None, **fields: object
    ) -> None:
        """The manager answered the call `what` (None: the only call this log is for):
        the outage, if there was one and nothing else keeps it open, is over and said
        so."""
        with self._lock:
            self._answered_at = self.clock()
            if what is None:
                self._failing.clear()
            else:
                self._failing -= {_UNREACHABLE, what}
            if self._since is None or self._failing:
                return
            down = round(self._answered_at - self._since)
            failures = self._failures
            self._since, self._failures = None, 0
        logger.info(f"reconnected after {down} s", failures=failures, **fields)
        _tell(Outage(what or "", None, down=down))

    def withdrawn(self, what: str) -> None:
        """The call `what` is tried no more (it gave up, was stopped, or got an answer
        that waiting does not fix): it no longer keeps the outage open, which the next
        answer to any call ends. In a shared log a call answered with errors that then
        gave up would otherwise hold the outage open for good: no `reconnected`, and no
        first line for the next outage."""
        with self._lock:
            self._failing.discard(what)


def call_with_retry(
    fn: Callable[[], _T],
    what: str,
    policy: RetryPolicy,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    logger: FilteringBoundLogger | None = None,
    on_retry: Retrying | None = None,
    sleep: Callable[[float], None] = time.sleep,
    outage: OutageLog | None = None,
) -> _T:
    """Call `fn` until it succeeds, a non-retryable error occurs, or time runs out.

    The last retryable error is re-raised when `give_up_after` is spent; `RetryAborted`
    when `stop` is set during a wait (or is set already when a call fails). The retries
    are logged as an `OutageLog` says: `outage`, shared by all the calls of one program
    (a worker's) so that one outage is said once, whichever calls see it.
    """
    logger = logger or log
    outage = outage or OutageLog(clock=clock)
    started = clock()
    delay = policy.delays()
    attempt = 0
    try:
        while True:
            began = clock()
            try:
                result = fn()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                pause = delay(attempt)
                elapsed = clock() - started
                if policy.give_up_after is not None and elapsed + pause > policy.give_up_after:
                    logger.warning(
                        "giving up", call=what, after_seconds=round(elapsed), error=str(exc)
                    )
                    raise
                if stop is not None and stop.is_set():  # stopping: no "retrying" to log
                    raise RetryAborted(what) from exc
                outage.failed(logger, what, exc, policy.max_delay, began)
                if on_retry is not None:
                    on_retry(exc, pause)
                if stop is not None:
                    if stop.wait(pause):
                        raise RetryAborted(what) from exc
                else:
                    sleep(pause)
                attempt += 1
            else:
                outage.answered(logger, what, call=what)
                return result
    except BaseException:
        outage.withdrawn(what)  # no longer tried: see `OutageLog.withdrawn`
        raise
