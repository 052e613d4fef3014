"""The reaper's clock: silence before it does not count against workers or tasks.

It starts at the manager process's start and again at every call refused for a full
disk (507), and the processes of one `--processes N` manager tell each other of their
refusals: a worker's heartbeats may all have gone to another process than the one whose
reaper looks at it.
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
    clock.storage_full(refused)
    assert clock.starts_at == refused
    clock.storage_full(refused - timedelta(minutes=1))  # a late report of an earlier one
    assert clock.starts_at == refused, "the mark never goes back"
    clock.storage_full(started - timedelta(minutes=1))
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
            here.storage_full(refused)
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
