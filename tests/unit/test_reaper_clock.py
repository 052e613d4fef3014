"""The reaper's clock: silence before it does not count against workers or tasks.

It starts at the manager process's start and again at every call refused for its
storage (a full, read-only or unwritable data dir, 507; no file descriptor, 503), and
the processes of one `--processes N` manager tell each other of their refusals: a
worker's heartbeats may all have gone to another process than the one whose reaper
looks at it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from farmhand.manager.clock import utcnow
from farmhand.manager.scheduling.reaper import SIBLING_TOPIC, ReaperClock
from farmhand.manager.siblings import Siblings
from tests.unit.test_siblings import TIMEOUT, directory, run_in_own_loop

__all__ = ["directory"]  # the fixture, used by name


def test_the_clock_starts_at_the_start_then_at_the_last_refusal() -> None:
    started = utcnow() - timedelta(minutes=5)
    clock = ReaperClock(started)
    assert clock.starts_at == started
    refused = started + timedelta(minutes=2)
    clock.storage_refused(refused)
    assert clock.starts_at == refused
    clock.storage_refused(refused - timedelta(minutes=1))  # a late report of an earlier one
    assert clock.starts_at == refused, "the mark never goes back"
    clock.storage_refused(started - timedelta(minutes=1))
    assert clock.starts_at == refused


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "the sibling never heard"
        await asyncio.sleep(0.01)


def test_a_refusal_in_one_process_moves_the_clock_of_its_siblings(directory: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = utcnow() - timedelta(minutes=5)
        here, there = ReaperClock(started), ReaperClock(started)
        first, second = Siblings(directory), Siblings(directory)
        here.share_with(first)
        there.share_with(second)
        first.start(loop)
        second.start(loop)
        try:
            refused = utcnow() - timedelta(seconds=1)
            here.storage_refused(refused)
            await _until(lambda: there.starts_at == refused)
            # What no clock of this host wrote is ignored, or taken as now at most.
            first.broadcast(SIBLING_TOPIC, {"at": "not a time"})
            first.broadcast(SIBLING_TOPIC, {"at": "2026-01-01T00:00:00"})  # no zone
            first.broadcast(SIBLING_TOPIC, {"at": (utcnow() + timedelta(days=1)).isoformat()})
            await _until(lambda: there.starts_at != refused)
            assert refused < there.starts_at <= utcnow()
        finally:
            first.close()
            second.close()

    run_in_own_loop(scenario)


def test_time_writes_waited_for_the_database_is_nobodys_silence() -> None:
    """A worker heartbeating every 5 s, its last heartbeat stored just before another
    process locked the database for 45 s (within the busy timeout: nothing refused).
    Its heartbeats meanwhile waited; with a 30 s timeout it must not count as silent
    when the lock ends, only once 30 s of time the database could record have passed."""
    started = utcnow() - timedelta(hours=1)
    clock = ReaperClock(started)
    now = started + timedelta(minutes=30)
    assert clock.silent_before(now, 30) == now - timedelta(seconds=30)
    last_beat = now - timedelta(seconds=47)
    locked, released = last_beat + timedelta(seconds=1), now - timedelta(seconds=1)
    clock.database_waited(locked + timedelta(seconds=3), released)  # a later waiter
    clock.database_waited(locked, released - timedelta(seconds=2))  # the first one
    cutoff = clock.silent_before(now, 30)
    assert cutoff is not None and not last_beat < cutoff, "45 s of waiting not counted"
    assert cutoff == locked - timedelta(seconds=29)  # 1 s after the lock, 29 s before it
    # A dead worker is found later by the time the lock lasted, not never.
    assert clock.silent_before(now + timedelta(seconds=45), 30) == now + timedelta(seconds=15)
    # Silence before the start still never counts.
    assert clock.silent_before(started + timedelta(seconds=20), 30) is None


def test_short_waits_cost_little_and_many_are_kept_bounded() -> None:
    started = utcnow() - timedelta(days=1)
    clock = ReaperClock(started)
    now = utcnow()
    for second in range(3000):  # a wait of one second in every two, for 100 minutes
        begun = now - timedelta(seconds=6000 - 2 * second)
        clock.database_waited(begun, begun + timedelta(seconds=1))
    cutoff = clock.silent_before(now, 30)
    assert cutoff is not None and now - cutoff <= timedelta(seconds=61)
