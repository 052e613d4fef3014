"""TaskLogs: lines are queued by `append` and written by one background thread.

What callers rely on: every accepted line lands in `<root>/job-<id>/task-<id>.log`, in the
order its caller appended it; `flush`/`read` see everything appended before them; `close`
writes what is queued and stops the writer; a failed write loses only its own lines.

Every wait here has a timeout, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from farmhand.manager.log_throttle import LOG_EVERY, LogThrottle
from farmhand.manager.storage import logs as logs_module
from farmhand.manager.storage.logs import MAX_LINE, TaskLogs

WRITER = "farmhand-task-logs"
TIMEOUT = 3.0
"""Seconds a call that should return promptly may take before the test calls it a hang."""
HANG = 0.5
"""Seconds a call is given in the tests that expect (and document) a hang."""


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WRITER and t.is_alive()]


def call_with_timeout(fn: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Run `fn` in a daemon thread; fail the test if it has not returned within `timeout`."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as error:  # reported to the test below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[TaskLogs]:
    task_logs = TaskLogs(tmp_path / "logs")
    yield task_logs
    call_with_timeout(task_logs.close)


class GatedWrite:
    """Stands in for the module's `_write`: each write waits until `gate` is open."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.left = threading.Event()
        """Set once a write stopped waiting at the gate (it opened, or the wait gave up)."""
        self.real = logs_module._write

    def __call__(self, path: Path, lines: list[str]) -> None:
        self.entered.set()
        opened = self.gate.wait(TIMEOUT)
        self.left.set()
        if not opened:
            raise AssertionError("the test never opened the write gate")
        self.real(path, lines)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedWrite]:
    gate = GatedWrite()
    monkeypatch.setattr(logs_module, "_write", gate)
    yield gate
    gate.gate.set()  # never leave the writer stuck for the fixtures torn down after us


class RecordingLog:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


class FakeClock:
    """Seconds the test moves by hand, for a `LogThrottle`'s interval."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------- where and what


def test_lines_land_in_the_task_file_under_the_job_folder(logs: TaskLogs) -> None:
    logs.append(7, 42, ["first", "second"])
    logs.append(7, 42, ["third"])

    path = logs.root / "job-7" / "task-42.log"
    assert logs.path_for(7, 42) == path
    assert logs.read(7, 42) == "first\nsecond\nthird\n"
    assert path.read_text(encoding="utf-8") == "first\nsecond\nthird\n"


def test_read_of_a_task_without_log_is_empty(logs: TaskLogs) -> None:
    assert logs.read(1, 1) == ""
    logs.append(1, 2, ["other task"])
    assert logs.read(1, 1) == ""
    assert logs.read(2, 2) == ""


def test_many_threads_many_tasks_no_line_lost_duplicated_or_reordered(logs: TaskLogs) -> None:
    threads_n, batches, tasks = 8, 40, [(1, 1), (1, 2), (2, 3), (3, 4)]
    barrier = threading.Barrier(threads_n)
    seen_own_last: dict[int, bool] = {}

    def appender(t: int) -> None:
        barrier.wait(TIMEOUT)
        for b in range(batches):
            for job, task in tasks:
                size = 1 + (b + t + task) % 3  # batches of 1 to 3 lines
                logs.append(job, task, [f"t{t} b{b} n{n} task{task}" for n in range(size)])
        # read-your-writes: this thread's own last line is visible to its own read
        job, task = tasks[-1]
        size = 1 + (batches - 1 + t + task) % 3
        seen_own_last[t] = f"t{t} b{batches - 1} n{size - 1} task{task}" in logs.read(job, task)

    workers = [threading.Thread(target=appender, args=(t,), daemon=True) for t in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
        assert not worker.is_alive(), "an appender hung"
    assert seen_own_last == dict.fromkeys(range(threads_n), True)

    for job, task in tasks:
        got = logs.read(job, task).splitlines()
        expected = [
            f"t{t} b{b} n{n} task{task}"
            for t in range(threads_n)
            for b in range(batches)
            for n in range(1 + (b + t + task) % 3)
        ]
        assert len(got) == len(expected), f"task {task}: lines lost or duplicated"
        assert sorted(got) == sorted(expected), f"task {task}: wrong lines"
        for t in range(threads_n):
            own = [line for line in got if line.startswith(f"t{t} ")]
            assert own == [line for line in expected if line.startswith(f"t{t} ")], (
                f"task {task}: thread {t}'s lines out of order"
            )
        # the file is exactly what read() returned, in the right place
        assert lines_of(logs.root / f"job-{job}" / f"task-{task}.log") == got
    assert len(writer_threads()) == 1, "one writer thread, not one per append"


def test_long_lines_are_cut_and_trailing_newlines_make_no_blank_lines(logs: TaskLogs) -> None:
    long = "x" * (MAX_LINE + 500)
    exact = "y" * MAX_LINE
    logs.append(
        1,
        1,
        [
            long,
            exact + "\n",  # the newline is past the cut: still one line
            "z" * (MAX_LINE - 1) + "\n\n\nlost tail",  # cut inside the newlines
            "ends with newline\n",
            "ends with several\n\n\n",
            "",  # a blank line the worker printed stays one blank line
            "inner\nnewline",  # not split by TaskLogs: the file gets two lines
        ],
    )
    assert logs.read(1, 1).split("\n") == [
        "x" * MAX_LINE,
        exact,
        "z" * (MAX_LINE - 1),
        "ends with newline",
        "ends with several",
        "",
        "inner",
        "newline",
        "",  # the file ends with a newline
    ]


def test_unencodable_characters_are_replaced_not_fatal(logs: TaskLogs) -> None:
    logs.append(1, 1, ["bad \udcff byte", "after"])
    logs.append(1, 2, ["other task"])
    assert call_with_timeout(lambda: logs.read(1, 1)) == "bad ? byte\nafter\n"
    assert call_with_timeout(lambda: logs.read(1, 2)) == "other task\n"


def test_the_caller_may_reuse_its_list_after_append(logs: TaskLogs, gated: GatedWrite) -> None:
    buffer = ["one", "two"]
    logs.append(1, 1, buffer)
    buffer.clear()
    buffer.append("changed")
    gated.gate.set()
    assert call_with_timeout(lambda: logs.read(1, 1)) == "one\ntwo\n"


def test_append_with_no_lines_writes_nothing(logs: TaskLogs) -> None:
    logs.append(1, 1, [])
    call_with_timeout(logs.flush)
    assert not logs.root.exists(), "an empty append created a folder"
    assert logs.read(1, 1) == ""
    assert writer_threads() == [], "an empty append started the writer"

    logs.append(1, 1, ["real"])
    logs.append(1, 1, [])
    assert logs.read(1, 1) == "real\n"
    assert sorted(p.name for p in (logs.root / "job-1").iterdir()) == ["task-1.log"]


# --------------------------------------------------------------------- append, flush


def test_append_returns_while_the_disk_is_stuck(logs: TaskLogs, gated: GatedWrite) -> None:
    """On the event loop, append must only queue: a slow disk must not stall it.

    The appends come while a write is stuck, and must all return while it still is:
    not a timed check, which a loaded machine could fail by being slow."""
    logs.append(1, 1, ["line 0"])
    assert gated.entered.wait(TIMEOUT), "the writer never started writing"

    async def report_progress() -> None:
        for n in range(1, 200):
            logs.append(1, 1, [f"line {n}"])

    asyncio.run(report_progress())
    assert not gated.left.is_set(), "append returned only once the stuck write gave up"
    assert not logs.path_for(1, 1).exists()

    gated.gate.set()
    call_with_timeout(logs.flush)
    assert lines_of(logs.path_for(1, 1)) == [f"line {n}" for n in range(200)]


def test_flush_returns_only_after_earlier_lines_are_on_disk(
    logs: TaskLogs, gated: GatedWrite
) -> None:
    logs.append(1, 1, ["a", "b"])
    logs.append(2, 5, ["c"])
    assert gated.entered.wait(TIMEOUT)

    flushed = threading.Event()

    def flush() -> None:
        logs.flush()
        flushed.set()

    flusher = threading.Thread(target=flush, daemon=True)
    flusher.start()
    assert not flushed.wait(0.2), "flush returned while the lines were still queued"

    gated.gate.set()
    flusher.join(TIMEOUT)
    assert flushed.is_set(), "flush hung after the writes went through"
    # straight from the disk, not through read() (which flushes itself)
    assert (logs.root / "job-1" / "task-1.log").read_text(encoding="utf-8") == "a\nb\n"
    assert (logs.root / "job-2" / "task-5.log").read_text(encoding="utf-8") == "c\n"


def test_flush_before_any_append_returns_at_once(logs: TaskLogs) -> None:
    call_with_timeout(logs.flush, timeout=0.5)
    assert writer_threads() == []


def test_flush_from_many_threads_while_appending(logs: TaskLogs) -> None:
    """A flush never hangs and always sees what its own thread appended before it."""
    failures: list[str] = []

    def worker(t: int) -> None:
        for n in range(50):
            logs.append(t, 1, [f"{t}-{n}"])
            logs.flush()
            text = logs.path_for(t, 1).read_text(encoding="utf-8")
            if not text.endswith(f"{t}-{n}\n"):
                failures.append(f"thread {t} flushed line {n} but the file ends {text[-20:]!r}")

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
        assert not w.is_alive(), "a flush hung"
    assert failures == []


# --------------------------------------------------------------------- close


def test_close_writes_what_is_queued_and_stops_the_writer(
    logs: TaskLogs, gated: GatedWrite
) -> None:
    for n in range(20):
        logs.append(1, n % 3, [f"line {n}"])
    assert gated.entered.wait(TIMEOUT)
    assert len(writer_threads()) == 1

    closing = threading.Thread(target=logs.close, daemon=True)
    closing.start()
    time.sleep(0.1)
    assert closing.is_alive(), "close returned before the queued lines were written"
    gated.gate.set()
    closing.join(TIMEOUT)
    assert not closing.is_alive(), "close hung"

    assert writer_threads() == [], "the writer thread survived close"
    for task in range(3):
        path = logs.root / "job-1" / f"task-{task}.log"
        assert lines_of(path) == [f"line {n}" for n in range(20) if n % 3 == task]


def test_append_after_close_restarts_the_writer_and_close_stops_it_again(
    logs: TaskLogs,
) -> None:
    logs.append(1, 1, ["before"])
    call_with_timeout(logs.close)
    assert writer_threads() == []

    logs.append(1, 1, ["after"])
    assert len(writer_threads()) == 1, "append after close did not restart the writer"
    assert call_with_timeout(lambda: logs.read(1, 1)) == "before\nafter\n"

    logs.append(1, 1, ["last"])
    call_with_timeout(logs.close)
    assert writer_threads() == []
    assert logs.path_for(1, 1).read_text(encoding="utf-8") == "before\nafter\nlast\n"

    call_with_timeout(logs.close)  # closing twice is harmless
    call_with_timeout(logs.flush, timeout=0.5)  # and so is a flush after close


def test_close_without_any_append_is_harmless(logs: TaskLogs) -> None:
    call_with_timeout(logs.close, timeout=0.5)
    assert writer_threads() == []
    assert not logs.root.exists()


# --------------------------------------------------------------------- failing writes


def test_a_failed_write_loses_only_its_lines_and_is_logged(
    logs: TaskLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingLog()
    monkeypatch.setattr(logs_module, "log", recorder)
    logs.root.mkdir(parents=True)
    blocker = logs.root / "job-1"
    blocker.write_text("not a folder", encoding="utf-8")  # mkdir of the job folder fails

    logs.append(1, 1, ["doomed"])
    logs.append(2, 1, ["kept"])
    logs.append(1, 2, ["doomed too"])
    logs.append(2, 1, ["kept too"])
    call_with_timeout(logs.flush)

    assert (logs.root / "job-2" / "task-1.log").read_text(encoding="utf-8") == "kept\nkept too\n"
    assert blocker.read_text(encoding="utf-8") == "not a folder"
    assert call_with_timeout(lambda: logs.read(1, 1)) == ""
    # Said once (the second loss comes within the minute), naming where and why.
    assert [event for event, _ in recorder.errors] == ["task log lines lost"]
    said = recorder.errors[0][1]
    assert said["path"] == str(blocker / "task-1.log")
    assert "Not a directory" in said["error"]
    assert (said["lines_lost"], said["writes_lost"]) == (1, 1)
    assert len(writer_threads()) == 1, "the writer died on an OSError"

    # once the obstacle is gone, the same task's later lines are written again
    blocker.unlink()
    logs.append(1, 1, ["recovered"])
    assert call_with_timeout(lambda: logs.read(1, 1)) == "recovered\n"
    call_with_timeout(logs.close)
    assert writer_threads() == []


def test_an_unwritable_data_dir_says_lost_lines_once_a_minute_and_mends_without_restart(
    tmp_path: Path,
) -> None:
    """A data dir that cannot be written (read-only, full): every progress report of
    every worker loses its lines, and each loss put a line in the manager's log, burying
    it. Now the first loss is said at once, then one line a minute with how many lines
    were lost meanwhile and where the latest were; once it can be written again, new
    lines land in their files and that is said once."""
    clock = FakeClock()
    logs = TaskLogs(tmp_path / "logs", LogThrottle(clock=clock))
    # Where the logs folder should be there is a file: no folder can be made under it,
    # root or not (EROFS itself needs a mount: tests/integration/test_data_dir_read_only).
    logs.root.write_text("in the way", encoding="utf-8")

    def lost(entries: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
        return [entry for entry in entries if entry["event"] == "task log lines lost"]

    def mended(entries: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
        return [entry for entry in entries if entry["event"] == "task log lines are written again"]

    try:
        with capture_logs() as said:
            for n in range(40):  # four workers' progress reports, two lines each
                logs.append(1 + n % 2, 10 + n % 4, [f"report {n}", "Sample 3/128"])
            call_with_timeout(logs.flush)
            assert len(lost(said)) == 1, said  # not one per report
            first = lost(said)[0]
            assert first["log_level"] == "error"
            assert first["path"] == str(logs.path_for(1, 10))
            assert "Not a directory" in first["error"]
            assert (first["lines_lost"], first["writes_lost"]) == (2, 1)

            clock.now += LOG_EVERY  # a minute on: the next loss is said, with the count
            logs.append(2, 13, ["late"])
            call_with_timeout(logs.flush)
            assert len(lost(said)) == 2, said
            again = lost(said)[1]
            assert again["path"] == str(logs.path_for(2, 13))
            assert (again["lines_lost"], again["writes_lost"]) == (39 * 2 + 1, 40)

            for n in range(10):  # within that minute: counted, not said
                logs.append(1, 10, [f"more {n}", "Sample 4/128"])
            call_with_timeout(logs.flush)
            assert len(lost(said)) == 2, said
            assert mended(said) == []

            logs.root.unlink()  # writable again, no restart
            logs.append(1, 10, ["after"])
            logs.append(2, 11, ["after too"])
            assert call_with_timeout(lambda: logs.read(1, 10)) == "after\n"
            assert call_with_timeout(lambda: logs.read(2, 11)) == "after too\n"
            logs.append(1, 10, ["and on"])
            assert call_with_timeout(lambda: logs.read(1, 10)) == "after\nand on\n"
        assert len(lost(said)) == 2, said
        assert len(mended(said)) == 1, said  # said once, not per write
        back = mended(said)[0]
        assert back["path"] == str(logs.path_for(1, 10))
        assert (back["lines_lost"], back["writes_lost"]) == (20, 10)
        assert len(writer_threads()) == 1, "the writer died on an OSError"
    finally:
        call_with_timeout(logs.close)


def test_a_failed_write_does_not_stop_close(
    logs: TaskLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_module, "log", RecordingLog())
    logs.root.mkdir(parents=True)
    (logs.root / "job-1").write_text("", encoding="utf-8")
    logs.append(1, 1, ["doomed"])
    logs.append(3, 3, ["kept"])
    call_with_timeout(logs.close)
    assert writer_threads() == []
    assert (logs.root / "job-3" / "task-3.log").read_text(encoding="utf-8") == "kept\n"


# --------------------------------------------------------------------- races with close
#
# In the manager, `close` runs in the app's lifespan on the event loop while `fail` and
# the task-log route are sync routes on the thread pool: they can call `append` and
# `read`/`flush` at the same moment.


def test_appends_and_flushes_racing_closes_neither_hang_nor_lose_or_reorder_lines(
    logs: TaskLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = logs_module._write

    def slow_write(path: Path, lines: list[str]) -> None:
        time.sleep(0.0005)  # a slow disk: writers are busy when close() comes
        real_write(path, lines)

    monkeypatch.setattr(logs_module, "_write", slow_write)
    per_thread = 60
    stop = threading.Event()

    def writer(task: int) -> None:
        for n in range(per_thread):
            logs.append(1, task, [f"{n}"])
            if n % 7 == 0:
                logs.flush()  # must return even when a close() slips in

    def closer() -> None:
        while not stop.is_set():
            logs.close()  # each close stops the writer; the next append starts one
            time.sleep(0.001)

    closing = threading.Thread(target=closer, daemon=True)
    closing.start()
    threads = [threading.Thread(target=writer, args=(task,), daemon=True) for task in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 3)
    stop.set()
    closing.join(TIMEOUT)
    assert not any(t.is_alive() for t in [*threads, closing]), "append/flush/close hung"
    call_with_timeout(logs.close)

    assert writer_threads() == []
    for task in range(6):
        written = logs.path_for(1, task).read_text(encoding="utf-8").splitlines()
        assert written == [str(n) for n in range(per_thread)], f"task {task}: {written[:10]}"
