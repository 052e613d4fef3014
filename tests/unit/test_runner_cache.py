"""The manager's short memory of runner secrets: fresh entries only, forgotten on delete."""

from __future__ import annotations

from farmhand.manager.auth.runner_cache import RunnerIdCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_its_ttl_only() -> None:
    clock = Clock()
    cache = RunnerIdCache(ttl=60.0, clock=clock)
    assert cache.get("digest") is None
    cache.put("digest", 7)
    clock.now = 59.9
    assert cache.get("digest") == 7
    clock.now = 60.0
    assert cache.get("digest") is None, "stale: the database is asked again"


def test_deleting_a_worker_forgets_its_secrets_only() -> None:
    cache = RunnerIdCache(clock=Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    cache.forget_worker(1)
    assert cache.get("a") is None
    assert cache.get("b") == 2


def test_the_cache_stays_bounded() -> None:
    cache = RunnerIdCache(clock=Clock(), max_entries=3)
    for n in range(10):
        cache.put(f"d{n}", n)
    assert cache.get("d9") == 9
    assert sum(cache.get(f"d{n}") is not None for n in range(10)) <= 3
