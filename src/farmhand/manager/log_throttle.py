"""How often the manager says a fault that recurs: the one home of that policy.

While the manager's storage is refused (a full disk, a read-only or unwritable data dir,
no file descriptor to spare) every retry of every worker meets it again, and every
progress report brings task log lines that cannot be written: a line each (or a
traceback each) buried the manager's log, hundreds a minute on a busy farm. So a fault
is said at once the first time, then at most once every `LOG_EVERY` seconds, each line
with how many occurrences it stands for (`LogThrottle.occurred`). A caller that can
tell the fault has passed says so once (`LogThrottle.cleared`); an occurrence after
that starts a new spell, said as soon as the interval since the last line is over (a
fault that comes and goes with every call says a line or two an interval, not one a
call).

The API's storage refusals (`api.errors.StorageLog`) and the task-log writer
(`storage.logs.TaskLogs`) both say their faults through it. It only decides when to
speak and with which counts; the caller writes the line (its own event, its own fields).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

LOG_EVERY = 60.0
"""Seconds between two log lines of one kind of fault while it lasts."""


@dataclass(frozen=True)
class Due:
    """A line to write now about a kind of fault."""

    counts: dict[str, int]
    """Each count given to `occurred` since the last line said of this kind, summed: for
    `occurred`, this occurrence's included; for `cleared`, those never said."""
    first: bool
    """For `occurred`: whether this is the first line of a spell of the fault (no line
    before, or the last one said it had cleared). False for `cleared`."""


@dataclass
class _Spell:
    said_at: float | None = None
    kept: Counter[str] = field(default_factory=Counter)
    """Counts of the occurrences since the last line said."""
    announced: bool = False
    """A line has said the fault is on, and none since that it cleared."""

    def due(self, now: float, every: float) -> bool:
        return self.said_at is None or now - self.said_at >= every

    def said(self, now: float, *, first: bool) -> Due:
        self.said_at = now
        counts, self.kept = dict(self.kept), Counter()
        return Due(counts, first)


class LogThrottle:
    """When to say each kind of fault (the module's docstring). Any thread."""

    def __init__(
        self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self._clock = clock
        """Seconds, only ever growing (a test may pass its own)."""
        self._lock = threading.Lock()
        self._spells: dict[str, _Spell] = {}

    def occurred(self, kind: str, **counts: int) -> Due | None:
        """Note one occurrence of `kind`, `counts` being what it cost (e.g. `lines=3`).
        None: keep quiet, it is counted for the next line; else say it now."""
        now = self._clock()
        with self._lock:
            spell = self._spells.setdefault(kind, _Spell())
            spell.kept.update(counts)
            if not spell.due(now, self.every):
                return None
            first, spell.announced = not spell.announced, True
            return spell.said(now, first=first)

    def cleared(self, kind: str) -> Due | None:
        """`kind` did not happen where it could have (what it refused went through).
        Returns a line to say so: at once after a line that said the fault was on, its
        counts those kept back since; else only if occurrences were kept back (a fault
        that came back between two lines) and a line is due, so none goes unsaid for
        good. None otherwise: a fault that comes and goes says at most about a line
        each way per interval. The next occurrence after a line saying it cleared is
        the first of a new spell."""
        now = self._clock()
        with self._lock:
            spell = self._spells.get(kind)
            if spell is None:
                return None
            if spell.announced:
                spell.announced = False
                return spell.said(now, first=False)
            if spell.kept and spell.due(now, self.every):
                return spell.said(now, first=False)
            return None
