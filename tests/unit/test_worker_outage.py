"""A worker's log while the manager does not answer: one WARNING when it stops answering
(saying the worker keeps retrying, and how often), then at most one line every few
minutes, and one INFO line when it answers again. Each retry (claims, heartbeats, every
0.1-10 s) used to log a WARNING of its own: a manager down for an hour filled the log
with hundreds of identical lines. And every call of a task (progress, frame uploads,
downloads, the outcome) had a log of its own: one outage was announced by the heartbeat
and again by each of them, its end as often."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import structlog
from structlog.testing import capture_logs

from farmhand.client.errors import FarmhandError, ManagerUnreachable
from farmhand.client.retry import OutageLog, RetryPolicy, call_with_retry
from farmhand.shared.schemas import TaskAssignment, TaskProgress, TaskProgressReply
from farmhand.worker.agent import Agent, RenderJob, RenderOutcome, _TaskRun, run_worker
from farmhand.worker.hardware import capabilities
from tests.unit.test_worker_agent import FakeManager, _settings, _start, _stop, _write_frame


def test_an_hour_of_outage_is_a_dozen_lines_then_reconnected() -> None:
    """A retry every 10 s for an hour (a fake clock): the first failure, one line per
    five minutes with the count, and `reconnected after 3600 s`, the ids kept."""
    now = [0.0]
    outage = OutageLog(every=300.0, clock=lambda: now[0])
    logger = structlog.get_logger("test").bind(worker_id=5)
    with capture_logs() as logs:
        for _ in range(360):
            outage.failed(logger, "claim", ConnectionError("refused"), 10.0, task_id=11)
            now[0] += 10.0
        outage.answered(logger)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 12, [entry["event"] for entry in warnings]
    assert warnings[0]["event"].startswith(
        "the manager does not answer; retrying at least every 10 s until it does"
    )
    assert warnings[1]["event"] == "the manager still does not answer after 300 s; retrying"
    assert warnings[1]["failures"] == 31
    assert all(entry["task_id"] == 11 for entry in warnings), "its fields are kept"
    (back,) = [entry for entry in logs if entry["log_level"] == "info"]
    assert back["event"] == "reconnected after 3600 s" and back["failures"] == 360
    with capture_logs() as late:
        outage.failed(logger, "claim", ConnectionError("refused"), 10.0, began=now[0] - 5)
    assert late == [], "a call begun before the manager answered another loop is stale"


def test_a_worker_says_an_outage_once_and_when_it_is_over(tmp_path: Path) -> None:
    """A registered worker whose manager stops answering: its claims (backing off) and
    heartbeats (every 0.1 s here) all fail for a while, then it answers again."""
    manager = FakeManager([])
    manager.tasks.clear()  # an idle worker: claims and heartbeats only
    failures = threading.Event()
    refused = [0]
    handler = manager.handler

    def counting(request: httpx.Request) -> httpx.Response:
        if manager.unreachable:
            refused[0] += 1
            if refused[0] >= 12:  # claims at 0 s, 0.5 s, 1.5 s; heartbeats meanwhile
                failures.set()
        return handler(request)

    def renderer(job: RenderJob) -> RenderOutcome:
        raise AssertionError("nothing to render")

    stop = threading.Event()
    with capture_logs() as logs:
        worker = threading.Thread(
            target=run_worker,
            args=(_settings(tmp_path),),
            kwargs={
                "renderer": renderer,
                "blender_versions": ["4.2.0"],
                "transport": httpx.MockTransport(counting),
                "stop": stop,
            },
        )
        worker.start()
        try:
            manager.wait_for("claim")
            manager.unreachable = True
            assert failures.wait(10), "the worker did not keep retrying"
            with manager.lock:
                manager.calls.clear()
            manager.unreachable = False
            manager.wait_for("claim")
            deadline = time.monotonic() + 10
            while not any("reconnected" in str(e["event"]) for e in logs):
                assert time.monotonic() < deadline, "no reconnected line"
                time.sleep(0.02)
        finally:
            stop.set()
            worker.join(10)
    said = [entry for entry in logs if "does not answer" in str(entry["event"])]
    assert len(said) == 1, [entry["event"] for entry in logs]
    assert said[0]["log_level"] == "warning" and said[0]["worker_id"] == 5
    assert not [e for e in logs if e["event"] in ("heartbeat failed", "claim failed; retrying")]
    (back,) = [entry for entry in logs if str(entry["event"]).startswith("reconnected after")]
    assert back["log_level"] == "info" and back["failures"] >= 12


class _Ticks:
    """A task's `finished` event whose waits pass on a fake clock: each wait is one tick
    of the progress loop, `ticks` of them, with a line of Blender's log per tick."""

    def __init__(self, now: list[float], ticks: int, run: _TaskRun) -> None:
        self.now, self.left, self.run = now, ticks, run

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.now[0] += timeout
        self.left -= 1
        self.run.log_line(f"Fra:1 Sample {self.left}")
        return self.left < 0


class _DownClient:
    """A manager whose progress calls get no answer until `down` is cleared."""

    def __init__(self) -> None:
        self.down = True
        self.lines: list[str] = []

    def progress(self, task_id: int, progress: TaskProgress) -> TaskProgressReply:
        if self.down:
            raise ManagerUnreachable("connection refused")
        self.lines += progress.log_lines
        return TaskProgressReply(keep_going=True)


def test_an_hour_of_outage_while_rendering_is_a_dozen_progress_lines(tmp_path: Path) -> None:
    """A worker holding a task whose manager is away for an hour: its progress loop
    (a try every 0.75 s, on a fake clock) says so once, then every five minutes (12
    lines), and
    `reconnected` when a progress call gets through; the lines kept meanwhile are sent
    then. It used to log "progress not sent; will retry" at every tick: 4,800 an hour."""
    now = [0.0]
    client = _DownClient()
    settings = _settings(tmp_path)
    settings.progress_interval = 0.75
    caps = capabilities(["4.2.0"])
    agent = Agent(settings, object(), client, caps)  # type: ignore[arg-type]
    run = _TaskRun(TaskAssignment.model_validate(FakeManager([1]).tasks[0]))
    agent._outage = OutageLog(clock=lambda: now[0])
    tlog = agent.log.bind(job_id=run.task.job_id, task_id=run.task.task_id)
    run.finished = _Ticks(now, 4800, run)  # type: ignore[assignment]
    with capture_logs() as logs:
        agent._progress_loop(run, tlog)
        assert now[0] == 3600.75
        client.down = False
        run.finished = _Ticks(now, 1, run)  # type: ignore[assignment]
        agent._progress_loop(run, tlog)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 12, [entry["event"] for entry in logs]
    assert warnings[0]["event"].startswith("the manager does not answer; retrying at least")
    assert all(entry["call"] == "progress" for entry in warnings)
    assert all(
        (entry["worker"], entry["job_id"], entry["task_id"])
        == ("w1", run.task.job_id, run.task.task_id)
        for entry in warnings
    ), "the task's ids are kept"
    (back,) = [entry for entry in logs if entry["log_level"] == "info"]
    assert back["event"] == "reconnected after 3601 s" and back["failures"] == 4800
    assert back["task_id"] == run.task.task_id
    assert client.lines[0] == "Fra:1 Sample 4799", "the lines kept meanwhile are sent"


def test_a_call_the_manager_refuses_stays_one_outage_while_others_get_through() -> None:
    """Claims answered 500 for an hour while heartbeats get through every 10 s: one
    outage (a line per five minutes, saying the manager answers the claim with an
    error), not a new outage and a `reconnected` at every heartbeat."""
    now = [0.0]
    outage = OutageLog(every=300.0, clock=lambda: now[0])
    logger = structlog.get_logger("test")
    refused = FarmhandError("internal error", 500)
    with capture_logs() as logs:
        for _ in range(360):
            outage.failed(logger, "claim", refused, 10.0, began=now[0])
            now[0] += 5.0
            outage.answered(logger, "heartbeat")
            now[0] += 5.0
        outage.answered(logger, "claim")
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 12, warnings
    assert warnings[0].startswith("the manager answers claim with an error; retrying")
    assert warnings[1] == "the manager still answers claim with an error after 300 s; retrying"
    (back,) = [entry for entry in logs if entry["log_level"] == "info"]
    assert back["event"] == "reconnected after 3600 s" and back["failures"] == 360


def test_a_manager_back_after_not_answering_is_back_at_its_first_answer() -> None:
    """No answer at all (connection refused) to claims and heartbeats alike: the first
    answer to either ends the outage, without waiting for a claim's long poll."""
    now = [0.0]
    outage = OutageLog(every=300.0, clock=lambda: now[0])
    logger = structlog.get_logger("test")
    gone = ManagerUnreachable("connection refused")
    with capture_logs() as logs:
        outage.failed(logger, "claim", gone, 10.0, began=now[0])
        outage.failed(logger, "heartbeat", gone, 1.0, began=now[0])
        now[0] += 60.0
        outage.answered(logger, "heartbeat")
    assert [entry["event"] for entry in logs if entry["log_level"] == "info"] == [
        "reconnected after 60 s"
    ]


def test_a_rendering_worker_says_one_outage_once_whichever_calls_see_it(tmp_path: Path) -> None:
    """The manager goes away while a task renders: its heartbeat, the task's progress
    report and a frame's upload all fail, each retrying at once on its own thread. The
    worker's log says so once, with the task's ids, and that it is back once. The upload
    and the progress reporter each used to say both again."""
    manager = FakeManager([1, 2])
    failed: dict[str, threading.Event] = {
        name: threading.Event() for name in ("heartbeat", "progress", "upload")
    }
    served = manager.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if manager.unreachable:
            path = request.url.path
            name = "upload" if "/frames/" in path else path.rsplit("/", 1)[-1]
            if name in failed:
                failed[name].set()
        return served(request)

    manager.handler = handler  # type: ignore[method-assign]

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_saved(1, _write_frame(job, 1))
        manager.unreachable = True
        job.on_log("Fra:2 Sample 1/1")  # for the progress reporter to send
        job.on_frame_saved(2, _write_frame(job, 2))
        for name, seen in failed.items():
            assert seen.wait(10), f"no {name} call while the manager was away"
        manager.unreachable = False
        return RenderOutcome(ok=True)

    with capture_logs() as logs:
        stop, thread, result = _start(tmp_path, manager, renderer)
        manager.wait_for("complete", timeout=20)
        _stop(stop, thread, result)
    assert manager.body("complete")["frames"] == [1, 2]
    said = [entry for entry in logs if "does not answer" in str(entry["event"])]
    assert len(said) == 1, [(e["event"], e.get("call")) for e in said]
    assert said[0]["log_level"] == "warning" and said[0]["task_id"] == 11
    back = [entry for entry in logs if str(entry["event"]).startswith("reconnected after")]
    assert len(back) == 1, [(e["event"], e.get("call")) for e in back]
    assert back[0]["task_id"] == 11
    assert not [entry for entry in logs if entry["event"] == "giving up"]


def test_a_call_that_gives_up_leaves_the_outage_to_the_others() -> None:
    """In one shared log, a call the manager answers with errors until it gives up no
    longer holds the outage open: the next answer to another call ends it, and the next
    outage is announced anew (held open, there was no `reconnected`, and no first line
    for any later outage)."""
    now = [0.0]
    outage = OutageLog(every=300.0, clock=lambda: now[0])
    logger = structlog.get_logger("test")

    def refused() -> None:
        raise FarmhandError("internal error", 500)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with capture_logs() as logs:
        try:
            call_with_retry(
                refused, "download scene.blend", RetryPolicy(give_up_after=5.0),
                clock=lambda: now[0], logger=logger, sleep=sleep, outage=outage,
            )  # fmt: skip
        except FarmhandError:
            pass
        else:
            raise AssertionError("a call refused for good must give up")
        outage.answered(logger, "heartbeat")
        outage.failed(logger, "heartbeat", ManagerUnreachable("refused"), 1.0, began=now[0])
    events = [entry["event"] for entry in logs]
    assert events[0].startswith("the manager answers download scene.blend with an error")
    assert "giving up" in events
    assert len([e for e in events if e.startswith("reconnected after")]) == 1, events
    assert events[-1].startswith("the manager does not answer; retrying"), events
