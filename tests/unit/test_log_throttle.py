"""LogThrottle: when the manager says a fault that recurs, and with which counts.

What its callers (the API's storage refusals, the task-log writer) rely on: the first
occurrence is said at once; then at most one line an interval, carrying the counts of
every occurrence since the last line; the first success after a line said the fault is
on says so once; and no occurrence is left out of every line for good. The clock is the
test's, moved by hand.
"""

from __future__ import annotations

from farmhand.manager.log_throttle import LOG_EVERY, Due, LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_the_first_is_said_at_once_then_one_line_an_interval_with_the_counts() -> None:
    clock = Clock()
    throttle = LogThrottle(clock=clock)
    started = clock.now
    assert throttle.occurred("full", lines=3) == Due({"lines": 3}, first=True)
    for _ in range(99):
        clock.now += LOG_EVERY / 100
        assert throttle.occurred("full", lines=2) is None
    clock.now = started + LOG_EVERY  # a minute after the first line
    assert throttle.occurred("full", lines=1) == Due({"lines": 99 * 2 + 1}, first=False)
    assert throttle.occurred("full", lines=1) is None


def test_kinds_are_counted_apart() -> None:
    clock = Clock()
    throttle = LogThrottle(clock=clock)
    assert throttle.occurred("full", n=1) == Due({"n": 1}, first=True)
    assert throttle.occurred("read-only", n=1) == Due({"n": 1}, first=True)
    assert throttle.occurred("full", n=1) is None
    clock.now += LOG_EVERY
    assert throttle.occurred("read-only", n=1) == Due({"n": 1}, first=False)
    assert throttle.occurred("full", n=1) == Due({"n": 2}, first=False)


def test_the_end_of_a_fault_is_said_once_with_what_was_not_said() -> None:
    clock = Clock()
    throttle = LogThrottle(clock=clock)
    assert throttle.cleared("full") is None, "nothing was wrong: nothing to say"
    throttle.occurred("full", lines=2)
    throttle.occurred("full", lines=5)
    clock.now += 1
    assert throttle.cleared("full") == Due({"lines": 5}, first=False)
    assert throttle.cleared("full") is None, "said once, not per success"
    clock.now += LOG_EVERY
    assert throttle.cleared("full") is None
    # A new spell, past the interval, is news again.
    assert throttle.occurred("full", lines=1) == Due({"lines": 1}, first=True)


def test_a_fault_that_comes_and_goes_says_a_few_lines_an_interval_and_loses_no_count() -> None:
    """One task's folder unwritable, the others fine: failures and successes alternate
    with every progress report."""
    clock = Clock()
    throttle = LogThrottle(clock=clock)
    said: list[tuple[str, Due]] = []
    for _ in range(100):  # a minute's reports, alternating
        clock.now += LOG_EVERY / 101
        failed = throttle.occurred("lost", lines=1)
        worked = throttle.cleared("lost")
        said += [(what, due) for what, due in [("lost", failed), ("mended", worked)] if due]
    assert [what for what, _ in said] == ["lost", "mended"]
    clock.now += LOG_EVERY
    last = throttle.cleared("lost")  # no failure since: the count still comes out
    assert last == Due({"lines": 99}, first=False)
    assert sum(due.counts.get("lines", 0) for _, due in said) + last.counts["lines"] == 100
