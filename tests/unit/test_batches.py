"""The orchestrator's batch policy: splitting, who takes what, when a batch fails."""

from __future__ import annotations

import pytest

from farmhand.orchestrator.app import RateLimiter
from farmhand.orchestrator.batches import BatchState, batch_failed, next_batch, split


def test_split_covers_the_range_in_order_without_overlap() -> None:
    assert [(b.first, b.last) for b in split(1, 6, 2)] == [(1, 2), (3, 4), (5, 6)]
    assert [(b.first, b.last) for b in split(1, 7, 3)] == [(1, 3), (4, 6), (7, 7)]
    assert [(b.first, b.last) for b in split(-2, 1, 10)] == [(-2, 1)]
    assert [(b.first, b.last) for b in split(5, 5, 2)] == [(5, 5)]


@pytest.mark.parametrize(("first", "last", "size"), [(3, 1, 2), (1, 3, 0)])
def test_split_refuses_nonsense(first: int, last: int, size: int) -> None:
    with pytest.raises(ValueError):
        split(first, last, size)


def test_a_failed_batch_goes_to_another_node_first() -> None:
    batches = split(1, 4, 2)
    first = next_batch(batches, "a", nodes=2)
    assert first is batches[0]
    first.state = BatchState.RUNNING
    batch_failed(first, "a", "Job failed: no camera", max_attempts=3)
    assert first.state is BatchState.PENDING
    assert next_batch(batches, "a", nodes=2) is batches[1], "a skips the batch it failed"
    assert next_batch(batches, "b", nodes=2) is batches[0], "b takes it"


def test_a_batch_every_node_failed_may_be_tried_again_until_its_attempts_are_spent() -> None:
    (batch,) = split(1, 2, 2)
    batch_failed(batch, "a", "boom", max_attempts=3)
    batch_failed(batch, "b", "boom", max_attempts=3)
    assert next_batch([batch], "a", nodes=2) is batch
    batch_failed(batch, "a", "boom again", max_attempts=3)
    assert batch.state is BatchState.FAILED
    assert next_batch([batch], "b", nodes=2) is None
    assert batch.errors == ["a: boom", "b: boom", "a: boom again"]


def test_rate_limiter_counts_per_client_in_a_sliding_window() -> None:
    limiter = RateLimiter(limit=2, window=10.0)
    assert limiter.wait_time("x", now=0.0) == 0.0
    limiter.record("x", now=0.0)
    assert limiter.wait_time("x", now=1.0) == 0.0
    limiter.record("x", now=1.0)
    assert limiter.wait_time("x", now=2.0) == pytest.approx(8.0)
    assert limiter.wait_time("y", now=2.0) == 0.0, "another client has its own budget"
    assert limiter.wait_time("x", now=10.5) == 0.0, "the first request left the window"


def test_rate_limiter_counts_only_what_is_recorded() -> None:
    limiter = RateLimiter(limit=1, window=10.0)
    for now in (0.0, 1.0, 2.0):
        assert limiter.wait_time("x", now=now) == 0.0, "asking is not counted"
    limiter.record("x", now=3.0)
    assert limiter.wait_time("x", now=4.0) == pytest.approx(9.0)


def test_rate_limiter_forgets_idle_clients() -> None:
    limiter = RateLimiter(limit=1, window=1.0)
    for n in range(10_001):
        limiter.record(f"client-{n}", now=0.0)
    limiter.record("late", now=5.0)
    assert limiter.wait_time("client-0", now=5.0) == 0.0
    assert len(limiter._seen) == 2, "only the two clients seen inside the window are kept"
