"""Siblings: messages between the processes of one manager over UNIX datagram sockets.

What callers rely on: a broadcast reaches every *other* started Siblings on the
directory (and not the sender); `EventBus` and `Wakeup` shared with Siblings pass
publishes and notifies to the other processes without echoing them back; a dead
process's socket file, a full or vanished peer, a malformed datagram, a broadcast from
another thread or after `close` never raise or stop later messages.

Absence is proven without sleeping: datagrams from one sender to one receiver arrive in
order, and a receiver's queue is FIFO whoever sent, so a marker sent after the message
that must not arrive comes first if that message was indeed never sent. Every wait has a
generous timeout, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from farmhand.manager.events import EventBus, FarmEvent
from farmhand.manager.scheduling.wakeup import Wakeup
from farmhand.manager.siblings import Siblings, siblings_dir

T = TypeVar("T")
TIMEOUT = 5.0
"""Seconds a message that should arrive may take before the test calls it lost."""


def run_in_own_loop(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """asyncio.run in a thread of its own: other tests (Playwright's sync API) may hold
    a running loop in the main thread of this test process."""
    box: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(asyncio.run(scenario()))
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        pytest.fail("scenario did not finish within 60 s")
    if errors:
        raise errors[0]
    return box[0]


@pytest.fixture
def directory() -> Iterator[Path]:
    """A short directory (AF_UNIX paths must fit in 108 bytes; tmp_path may not)."""
    root = tempfile.mkdtemp(prefix="sib-", dir="/tmp")
    try:
        yield Path(root) / "run" / "siblings"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def record(siblings: Siblings, topic: str) -> asyncio.Queue[dict[str, Any]]:
    """Queue every message `siblings` receives on `topic` (handlers run on the loop)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    siblings.on(topic, queue.put_nowait)
    return queue


async def next_of(queue: asyncio.Queue[T]) -> T:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


def started(directory: Path, loop: asyncio.AbstractEventLoop, count: int) -> list[Siblings]:
    group = [Siblings(directory) for _ in range(count)]
    for siblings in group:
        siblings.start(loop)
    return group


def close_all(group: list[Siblings]) -> None:
    for siblings in group:
        siblings.close()


def bound_then_closed(path: Path) -> None:
    """Leave a socket file nobody listens on, as a killed process does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_broadcast_reaches_the_others_and_not_the_sender(directory: Path) -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        a, b, _ = group = started(directory, asyncio.get_running_loop(), 3)
        got_a, got_b, got_c = (record(s, "hello") for s in group)
        try:
            a.broadcast("hello", {"n": 1, "from": "a"})
            first_b, first_c = await next_of(got_b), await next_of(got_c)
            # b answers: if a had sent n=1 to itself too, it would be ahead in a's queue.
            b.broadcast("hello", {"n": 2, "from": "b"})
            first_a = await next_of(got_a)
            return [first_a], [first_b], [first_c, await next_of(got_c)]
        finally:
            close_all(group)

    to_a, to_b, to_c = run_in_own_loop(scenario)
    assert to_a == [{"topic": "hello", "n": 2, "from": "b"}]
    assert to_b == [{"topic": "hello", "n": 1, "from": "a"}]
    assert to_c == [
        {"topic": "hello", "n": 1, "from": "a"},
        {"topic": "hello", "n": 2, "from": "b"},
    ]


def test_event_bus_publish_reaches_a_sibling_subscriber_without_echo(directory: Path) -> None:
    async def scenario() -> tuple[list[FarmEvent], list[FarmEvent]]:
        loop = asyncio.get_running_loop()
        group = started(directory, loop, 2)
        bus_a, bus_b = EventBus(), EventBus()
        for bus, siblings in zip((bus_a, bus_b), group, strict=True):
            bus.bind(loop)
            bus.share_with(siblings)
        seen_a: list[FarmEvent] = []
        seen_b: list[FarmEvent] = []
        try:
            async with bus_a.subscribe() as queue_a, bus_b.subscribe() as queue_b:
                bus_a.job_changed(7)
                seen_a.append(await next_of(queue_a))  # its own subscriber, locally
                seen_b.append(await next_of(queue_b))  # from a, through the sockets
                # Ping-pong markers: an echo of job 7 (b -> a) or of runner 1 (a -> b)
                # would have been sent before the marker that follows it.
                bus_b.runner_changed(1)
                seen_b.append(await next_of(queue_b))
                seen_a.append(await next_of(queue_a))
                bus_a.runner_changed(2)
                seen_a.append(await next_of(queue_a))
                seen_b.append(await next_of(queue_b))
                bus_b.runner_changed(3)
                seen_b.append(await next_of(queue_b))
                seen_a.append(await next_of(queue_a))
        finally:
            close_all(group)
        return seen_a, seen_b

    seen_a, seen_b = run_in_own_loop(scenario)
    expected = [FarmEvent("job", 7, 7)] + [FarmEvent("runner", n) for n in (1, 2, 3)]
    assert seen_a == expected
    assert seen_b == expected


def test_a_burst_of_events_reaches_the_sibling_whole_in_few_datagrams(directory: Path) -> None:
    """Hundreds of events in one loop turn (a busy manager): Linux queues only about ten
    datagrams per socket, so one datagram per event would lose most of them while the
    receiving loop is busy. Gathered per loop turn (and each event once) all arrive."""

    async def scenario() -> tuple[list[FarmEvent], int]:
        loop = asyncio.get_running_loop()
        sender_side, receiver_side = Siblings(directory), Siblings(directory)
        sender, receiver = EventBus(), EventBus()
        sender.bind(loop)
        receiver.bind(loop)
        sender.share_with(sender_side)
        receiver.share_with(receiver_side)
        datagrams = 0
        batch_handler = receiver._receive_batch

        def counting(message: dict[str, Any]) -> None:
            nonlocal datagrams
            datagrams += 1
            batch_handler(message)

        receiver_side.on("events", counting)
        sender_side.start(loop)
        receiver_side.start(loop)
        try:
            async with receiver.subscribe() as queue:
                for n in range(500):
                    sender.publish(FarmEvent("task", n, 1))
                    sender.publish(FarmEvent("job", 1, 1))  # the same event, again and again
                await asyncio.sleep(0)
                # The receiving loop is busy (this coroutine) while all of it is sent.
                got = [await next_of(queue) for _ in range(501)]
                return got, datagrams
        finally:
            close_all([sender_side, receiver_side])

    got, datagrams = run_in_own_loop(scenario)
    assert got[:3] == [FarmEvent("task", 0, 1), FarmEvent("job", 1, 1), FarmEvent("task", 1, 1)]
    assert sorted(e.id for e in got if e.kind == "task") == list(range(500))
    assert [e for e in got if e.kind == "job"] == [FarmEvent("job", 1, 1)]
    assert datagrams <= 5


def bus_on(directory: Path, loop: asyncio.AbstractEventLoop) -> tuple[Siblings, EventBus]:
    """A process's event bus on `loop`, sharing its events through started `Siblings`."""
    siblings = Siblings(directory)
    bus = EventBus()
    bus.bind(loop)
    bus.share_with(siblings)
    siblings.start(loop)
    return siblings, bus


def test_event_bus_across_two_event_loops(directory: Path) -> None:
    """As in the manager: each bus bound to its own loop, in its own thread."""
    ready = threading.Event()
    received: list[FarmEvent] = []

    async def receiver() -> None:
        siblings, bus = bus_on(directory, asyncio.get_running_loop())
        try:
            async with bus.subscribe() as queue:
                ready.set()
                received.append(await next_of(queue))
        finally:
            siblings.close()

    thread = threading.Thread(target=lambda: asyncio.run(receiver()), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)

    async def sender() -> None:
        siblings, bus = bus_on(directory, asyncio.get_running_loop())
        try:
            bus.publish(FarmEvent("output", 40, 7))
            await asyncio.sleep(0)  # a loop turn's events go out together, at its end
        finally:
            siblings.close()

    run_in_own_loop(sender)
    thread.join(TIMEOUT * 2)
    assert not thread.is_alive(), "the other loop's subscriber never got the event"
    assert received == [FarmEvent("output", 40, 7)]


def test_wakeup_in_one_process_wakes_claims_in_another(directory: Path) -> None:
    async def scenario() -> tuple[float, float, list[Any]]:
        loop = asyncio.get_running_loop()
        group = started(directory, loop, 3)
        a, b, spy = group
        wake_a, wake_b = Wakeup(), Wakeup()
        for wakeup, siblings in ((wake_a, a), (wake_b, b)):
            wakeup.bind(loop)
            wakeup.share_with(siblings)
        wakeups = record(spy, "wakeup")
        markers = record(spy, "marker")
        try:
            start = time.monotonic()
            waiting_b = asyncio.create_task(wake_b.wait(30))
            waiting_a = asyncio.create_task(wake_a.wait(30))
            await asyncio.sleep(0)  # both are waiting now
            wake_a.notify()
            await asyncio.wait_for(waiting_b, TIMEOUT)
            b_woke = time.monotonic() - start
            await asyncio.wait_for(waiting_a, TIMEOUT)
            a_woke = time.monotonic() - start
            # b re-broadcasting the wakeup would put a second one ahead of b's marker.
            b.broadcast("marker", {})
            await next_of(markers)
            seen = [wakeups.get_nowait() for _ in range(wakeups.qsize())]
        finally:
            close_all(group)
        return a_woke, b_woke, seen

    a_woke, b_woke, spied = run_in_own_loop(scenario)
    assert b_woke < 30 and a_woke < 30, "woken by the notify, not by the wait's timeout"
    assert spied == [{"topic": "wakeup"}], "one wakeup from a, none passed on by b"


def test_stale_and_vanished_sockets_are_skipped_and_removed(directory: Path) -> None:
    directory.mkdir(parents=True)
    of_dead_process = directory / f"{dead_pid()}-0000.sock"
    bound_then_closed(of_dead_process)
    # Same pid as a live process (ours), so start keeps it: the refused send removes it.
    refusing = directory / f"{os.getpid()}-dead.sock"
    bound_then_closed(refusing)
    unrelated = directory / "notes.txt"
    unrelated.write_text("not a socket of ours")

    async def scenario() -> tuple[list[str], list[Any]]:
        loop = asyncio.get_running_loop()
        a, b, c = group = started(directory, loop, 3)
        got_b = record(b, "hello")
        after_start = sorted(os.listdir(directory))
        try:
            a.broadcast("hello", {"n": 1})  # lists b, c and the refusing file
            first = await next_of(got_b)
            c.close()  # vanishes while cached in a's peer list
            a.broadcast("hello", {"n": 2})
            second = await next_of(got_b)
        finally:
            close_all(group)
        assert of_dead_process.name not in after_start, "removed by start"
        assert refusing.name in after_start, "a live pid: left for the refused send"
        return sorted(os.listdir(directory)), [first, second]

    left, got = run_in_own_loop(scenario)
    assert got == [{"topic": "hello", "n": 1}, {"topic": "hello", "n": 2}]
    assert left == ["notes.txt"], "stale file removed, own sockets unlinked on close"


def test_a_sibling_started_later_is_reached(directory: Path) -> None:
    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        (a,) = group = started(directory, loop, 1)
        try:
            a.broadcast("hello", {"n": 0})  # caches a listing without the newcomer
            late = Siblings(directory)
            got = record(late, "hello")
            late.start(loop)
            group.append(late)
            deadline = time.monotonic() + TIMEOUT
            while got.empty() and time.monotonic() < deadline:
                a.broadcast("hello", {"n": 1})
                await asyncio.sleep(0.05)
            return await next_of(got)
        finally:
            close_all(group)

    assert run_in_own_loop(scenario) == {"topic": "hello", "n": 1}


def test_broadcast_from_another_thread(directory: Path) -> None:
    async def scenario() -> list[Any]:
        a, b = group = started(directory, asyncio.get_running_loop(), 2)
        got = record(b, "hello")
        try:
            threads = [
                threading.Thread(target=a.broadcast, args=("hello", {"n": n})) for n in range(3)
            ]
            for thread in threads:
                thread.start()

            def join_all() -> None:
                for thread in threads:
                    thread.join(TIMEOUT)

            await asyncio.to_thread(join_all)
            return sorted([(await next_of(got))["n"] for _ in threads])
        finally:
            close_all(group)

    assert run_in_own_loop(scenario) == [0, 1, 2]


def test_broadcast_before_start_and_after_close_is_a_no_op(directory: Path) -> None:
    async def scenario() -> tuple[dict[str, Any], list[str]]:
        loop = asyncio.get_running_loop()
        idle = Siblings(directory)
        idle.broadcast("hello", {"n": 0})  # not started: nothing, no error
        idle.close()  # closing what never started is harmless too
        a, b, c = group = started(directory, loop, 3)
        got_b = record(b, "hello")
        a.close()
        a.close()  # idempotent
        after_close = sorted(os.listdir(directory))
        try:
            a.broadcast("hello", {"n": 1, "from": "a"})
            c.broadcast("hello", {"n": 2, "from": "c"})
            return await next_of(got_b), after_close
        finally:
            close_all(group)

    first, names = run_in_own_loop(scenario)
    assert first == {"topic": "hello", "n": 2, "from": "c"}, "a sent nothing after close"
    assert len(names) == 2, "a's socket file is gone"


def test_only_the_managers_user_may_reach_the_sockets(directory: Path) -> None:
    directory.mkdir(parents=True)
    directory.chmod(0o777)  # as left by hand or by a loose umask

    async def scenario() -> int:
        siblings = Siblings(directory)
        siblings.start(asyncio.get_running_loop())
        try:
            return directory.stat().st_mode & 0o777
        finally:
            siblings.close()

    assert run_in_own_loop(scenario) == 0o700


def test_malformed_datagrams_do_not_stop_later_messages(directory: Path) -> None:
    async def scenario() -> tuple[list[Any], list[FarmEvent]]:
        loop = asyncio.get_running_loop()
        escaped: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: escaped.append(context))
        a, b = group = started(directory, loop, 2)
        got = record(b, "hello")
        failing_calls: list[Any] = []

        def failing(message: dict[str, Any]) -> None:
            failing_calls.append(message)
            raise RuntimeError("handler bug")

        b.on("boom", failing)
        bus = EventBus()
        bus.bind(loop)
        bus.share_with(b)
        assert b.name is not None
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            async with bus.subscribe() as events:
                for junk in (
                    b"not json",
                    b"\xff\xfe\x00",
                    b"[1, 2]",
                    b'"topic"',
                    b'{"topic": 5}',
                    b'{"no": "topic"}',
                    b'{"topic": "nobody-listens"}',
                    b'{"topic": "events", "events": "not a list"}',
                    b'{"topic": "events", "events": [["job", 1]]}',
                    b'{"topic": "events", "events": [["bogus", 1, null]]}',
                    b'{"topic": "events", "events": [["job", "7", null]]}',
                    b'{"topic": "events", "events": [["job", true, null]]}',
                    b'{"topic": "events", "events": [["task", 1, "x"]]}',
                    b'{"topic": "boom"}',
                    b"",
                ):
                    raw.sendto(junk, str(directory / b.name))
                    await asyncio.sleep(0)  # let b read them one at a time as well
                a.broadcast("events", {"events": [["task", 12, 7]]})
                a.broadcast("hello", {"n": 1})
                event = await next_of(events)
                message = await next_of(got)
        finally:
            raw.close()
            close_all(group)
        assert failing_calls == [{"topic": "boom"}]
        assert escaped == [], "nothing reached the loop's exception handler"
        return [message], [event]

    messages, events = run_in_own_loop(scenario)
    assert messages == [{"topic": "hello", "n": 1}]
    assert events == [FarmEvent("task", 12, 7)]


def test_a_directory_too_deep_for_a_socket_path_still_works(directory: Path) -> None:
    deep = directory / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "123456-abcdef01.sock")) > 108

    async def scenario() -> dict[str, Any]:
        a, b = group = started(deep, asyncio.get_running_loop(), 2)
        got = record(b, "hello")
        try:
            a.broadcast("hello", {"n": 1})
            return await next_of(got)
        finally:
            close_all(group)

    assert run_in_own_loop(scenario) == {"topic": "hello", "n": 1}
    assert os.listdir(deep) == []


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from farmhand.manager.events import EventBus
    from farmhand.manager.siblings import Siblings, siblings_dir

    async def main():
        loop = asyncio.get_running_loop()
        siblings = Siblings(Path(sys.argv[1]))
        bye = asyncio.Event()
        siblings.on("bye", lambda message: bye.set())
        bus = EventBus()
        bus.bind(loop)
        bus.share_with(siblings)
        siblings.start(loop)
        try:
            siblings.broadcast("hello", {"pid": os.getpid()})
            bus.job_changed(42)
            await asyncio.wait_for(bye.wait(), 10)
        finally:
            siblings.close()

    asyncio.run(main())
    """
)


def test_a_second_process(directory: Path) -> None:
    async def scenario() -> tuple[dict[str, Any], FarmEvent, int, list[str]]:
        loop = asyncio.get_running_loop()
        (here,) = group = started(directory, loop, 1)
        hello = record(here, "hello")
        bus = EventBus()
        bus.bind(loop)
        bus.share_with(here)
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(directory))
        try:
            async with bus.subscribe() as events:
                greeting = await asyncio.wait_for(hello.get(), 15)
                event = await asyncio.wait_for(events.get(), 15)
            here.broadcast("bye", {})
            code = await asyncio.wait_for(child.wait(), 15)
            return greeting, event, code, sorted(os.listdir(directory))
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
            close_all(group)

    greeting, event, code, names = run_in_own_loop(scenario)
    assert isinstance(greeting["pid"], int) and greeting["pid"] != os.getpid()
    assert event == FarmEvent("job", 42, 42)
    assert code == 0, "the child got our 'bye'"
    assert len(names) == 1, "the child removed its socket on close"


def test_each_host_has_its_own_folder_in_a_shared_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Managers on two hosts sharing one data dir: neither sees the other's sockets (a
    UNIX socket reaches no other host, and a pid of another host would look dead, its
    socket removed)."""
    folders = []
    for host in ("render-manager-0", "render-manager-1", "../../etc", ".."):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        folders.append(siblings_dir(tmp_path))
    assert len(set(folders)) == 4
    assert all(folder.parent == tmp_path / "run" / "siblings" for folder in folders), folders
