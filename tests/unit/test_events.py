import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from farmhand.manager.events import EventBus, FarmEvent

T = TypeVar("T")


def run_in_own_loop(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """asyncio.run in a thread of its own: other tests (Playwright's sync API) may hold
    a running loop in the main thread of this test process."""
    box: list[T] = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(scenario())))
    thread.start()
    thread.join()
    return box[0]


def test_subscribers_get_events_published_from_other_threads() -> None:
    async def scenario() -> list[FarmEvent]:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        async with bus.subscribe() as queue:
            thread = threading.Thread(target=bus.job_changed, args=(7,))
            thread.start()
            thread.join()
            bus.runner_changed(3)
            got = [await asyncio.wait_for(queue.get(), 2) for _ in range(2)]
        assert bus.subscriber_count == 0, "leaving unsubscribes"
        return got

    assert set(run_in_own_loop(scenario)) == {FarmEvent("job", 7, 7), FarmEvent("runner", 3)}


def test_publishing_before_start_is_harmless() -> None:
    EventBus().job_changed(1)
