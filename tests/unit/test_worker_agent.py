"""The worker agent against an in-memory fake manager and a fake renderer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.shared.schemas import TaskAssignment
from farmhand.worker.agent import (
    EXIT_DELETED,
    RenderJob,
    RenderOutcome,
    WorkerSettings,
    run_worker,
)
from farmhand.worker.cache import TASK_LOGS_KEPT
from farmhand.worker.identity import Identity, identity_path, load_identity, save_identity
from farmhand.worker.outbox import Outbox, Outcome, TaskBox

BLEND = b"BLENDER-v300 fake scene"
BLEND_SHA = hashlib.sha256(BLEND).hexdigest()
URL = "http://manager.test"


class FakeManager:
    """Just enough of the runner API, recording every call; can play dead."""

    def __init__(self, frames: list[int]) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tasks: list[dict[str, Any]] = [
            {
                "task_id": 11,
                "job_id": 3,
                "job_name": "shot",
                "type": "render",
                "frames": frames,
                "main_file": "scene.blend",
                "files": [{"path": "scene.blend", "sha256": BLEND_SHA, "size": len(BLEND)}],
                "output_format": "PNG",
                "resolution_percentage": None,
                "samples": 1,
                "attempt": 1,
            }
        ]
        self.uploads: dict[int, bytes] = {}
        self.unreachable = False
        self.keep_going = True
        self.abort: list[int] = []
        self.valid_secrets = {"secret-1"}
        self.deleted_secrets: set[str] = set()
        """Refused as the manager refuses a runner an admin deleted."""
        self.on_call: Callable[[str], None] = lambda name: None
        self.hands_out_next = False
        """Answer `complete?next=true` with the next queued task, as the manager does."""

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]

    def body(self, name: str) -> dict[str, Any]:
        with self.lock:
            return next(b for n, b in self.calls if n == name)

    def wait_for(self, name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.names():
            assert time.monotonic() < deadline, f"no {name} call; calls: {self.names()}"
            time.sleep(0.02)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/api/runner/tasks/") and "/frames/" in path:
            name = "upload"
        elif path.startswith("/api/runner/tasks/"):
            name = path.rsplit("/", 1)[-1]
        elif path.startswith("/api/runner/files/"):
            name = "download"
        elif path == "/api/runner/tasks":
            name = "claim"
        body: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(request.read())
        elif name == "claim":
            body = dict(request.url.params)
        with self.lock:
            self.calls.append((name, body))
        self.on_call(name)
        if name == "register":
            return httpx.Response(
                201, json={"worker_id": 5, "name": body["name"], "secret": "secret-1"}
            )
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") in self.deleted_secrets:
            return httpx.Response(
                401,
                json={"detail": "this runner (w1) was deleted by admin alice"},
                headers={"X-Farmhand-Runner": "deleted"},
            )
        if auth.removeprefix("Bearer ") not in self.valid_secrets:
            return httpx.Response(401, json={"detail": "unknown runner"})
        if name == "heartbeat":
            return httpx.Response(200, json={"status": "busy", "abort_task_ids": self.abort})
        if name == "claim":
            with self.lock:
                task = self.tasks.pop(0) if self.tasks else None
            return httpx.Response(200, json=task) if task else httpx.Response(204)
        if name == "download":
            return httpx.Response(200, content=BLEND)
        if name == "upload":
            raw = request.read()
            frame = int(path.rsplit("/", 1)[-1].split(".")[0])
            with self.lock:
                self.uploads[frame] = raw
                self.calls[-1] = ("upload", {"frame": frame})
            return httpx.Response(
                201, json={"id": frame, "frame": frame, "sha256": "a" * 64, "size": 1}
            )
        if name == "progress":
            return httpx.Response(200, json={"keep_going": self.keep_going})
        if name in ("complete", "fail", "release"):
            outcome: dict[str, Any] = {"task_status": "completed", "job_status": "active"}
            if name == "complete":
                with self.lock:
                    self.calls[-1] = (name, {**body, "next": request.url.params.get("next")})
                    if self.hands_out_next and request.url.params.get("next") == "true":
                        outcome["next_task"] = self.tasks.pop(0) if self.tasks else None
            return httpx.Response(200, json=outcome)
        if name == "sign-off":
            return httpx.Response(204)
        return httpx.Response(404, json={"detail": f"no route {path}"})


def _settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        manager_url=URL,
        registration_token="reg",
        name="w1",
        work_dir=tmp_path / "work",
        heartbeat_interval=0.1,
        poll_wait=0.1,
        progress_interval=0.05,
        retry_for=30.0,
        shutdown_grace=2.0,
    )


def _start(
    tmp_path: Path, manager: FakeManager, renderer: Callable[[RenderJob], RenderOutcome]
) -> tuple[threading.Event, threading.Thread, list[int]]:
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_worker(
                _settings(tmp_path),
                renderer=renderer,
                blender_versions=["4.2.0"],
                transport=httpx.MockTransport(manager.handler),
                stop=stop,
            )
        ),
        daemon=True,
    )
    thread.start()
    return stop, thread, result


def _stop(stop: threading.Event, thread: threading.Thread, result: list[int]) -> None:
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "agent did not stop"
    assert result == [0]


def _write_frame(job: RenderJob, frame: int) -> Path:
    path = job.output_dir / f"{frame:04d}.png"
    path.write_bytes(b"\x89PNG frame %d" % frame)
    return path


def test_frames_upload_while_rendering_then_task_completes(tmp_path: Path) -> None:
    manager = FakeManager([1, 2, 3])
    seen_blend: list[bytes] = []

    def renderer(job: RenderJob) -> RenderOutcome:
        seen_blend.append(job.blend_file.read_bytes())
        for frame in job.task.frames:
            job.on_frame_started(frame)
            job.on_log(f"Fra:{frame} rendering")
            job.on_frame_saved(frame, _write_frame(job, frame))
            # The next frame starts only once this one reached the manager: uploads
            # overlap rendering instead of waiting for the whole task.
            deadline = time.monotonic() + 30  # generous: a loaded machine may be slow
            while frame not in manager.uploads:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete")
    _stop(stop, thread, result)

    assert seen_blend == [BLEND]
    assert sorted(manager.uploads) == [1, 2, 3]
    assert b"\x89PNG frame 2" in manager.uploads[2]
    assert manager.body("complete")["frames"] == [1, 2, 3]
    assert "fail" not in manager.names()
    assert manager.names()[-1] == "sign-off"
    sent_lines = [line for n, b in manager.calls if n == "progress" for line in b["log_lines"]]
    assert sent_lines == ["Fra:1 rendering", "Fra:2 rendering", "Fra:3 rendering"]
    # the identity is kept for the next start, readable by this user only
    identity = identity_path(tmp_path / "work")
    assert identity.stat().st_mode & 0o777 == 0o600
    assert load_identity(tmp_path / "work") == Identity(URL, 5, "w1", "secret-1")


def test_render_failure_is_reported_with_reason_and_log_tail(tmp_path: Path) -> None:
    manager = FakeManager([1])

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_log("boom")
        return RenderOutcome(ok=False, error="Blender crashed (exit code -11)", log_tail=["boom"])

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("fail")
    _stop(stop, thread, result)
    # The log reached the manager through progress before the fail call, which therefore
    # does not repeat it (the manager appends a fail's lines to the task log).
    sent_lines = [line for n, b in manager.calls if n == "progress" for line in b["log_lines"]]
    assert sent_lines == ["boom"]
    assert manager.body("fail") == {"reason": "Blender crashed (exit code -11)", "log_lines": []}
    assert "complete" not in manager.names()


def test_missing_frame_fails_the_task(tmp_path: Path) -> None:
    manager = FakeManager([1, 2])

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_saved(1, _write_frame(job, 1))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("fail")
    _stop(stop, thread, result)
    assert "did not save frames 2" in manager.body("fail")["reason"]


def _render_until_canceled(started: threading.Event) -> Callable[[RenderJob], RenderOutcome]:
    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_log("rendering forever")
        started.set()
        assert job.cancel.wait(10), "render was never canceled"
        return RenderOutcome(ok=False, error="canceled")

    return renderer


def test_keep_going_false_cancels_render_and_drops_task(tmp_path: Path) -> None:
    manager = FakeManager([1])
    manager.keep_going = False
    started = threading.Event()
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(started))
    assert started.wait(5)
    manager.wait_for("progress")
    time.sleep(0.5)
    _stop(stop, thread, result)
    assert not {"complete", "fail", "release"} & set(manager.names())


def test_heartbeat_abort_cancels_render(tmp_path: Path) -> None:
    manager = FakeManager([1])
    manager.abort = [11]
    started = threading.Event()
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(started))
    assert started.wait(5)
    time.sleep(0.6)
    _stop(stop, thread, result)
    assert not {"complete", "fail", "release"} & set(manager.names())


def test_stop_cancels_render_releases_task_and_signs_off_quickly(tmp_path: Path) -> None:
    manager = FakeManager([1])
    started = threading.Event()
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(started))
    assert started.wait(5)
    t0 = time.monotonic()
    _stop(stop, thread, result)
    assert time.monotonic() - t0 < 4
    names = manager.names()
    assert "release" in names and "fail" not in names and "complete" not in names
    assert names.index("release") < names.index("sign-off")


def test_manager_outage_mid_task_does_not_lose_the_task(tmp_path: Path) -> None:
    manager = FakeManager([1, 2])

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_saved(1, _write_frame(job, 1))
        manager.unreachable = True  # the manager restarts while frame 2 renders
        job.on_frame_saved(2, _write_frame(job, 2))
        threading.Timer(1.5, lambda: setattr(manager, "unreachable", False)).start()
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete", timeout=20)
    _stop(stop, thread, result)
    assert manager.body("complete")["frames"] == [1, 2]
    assert "fail" not in manager.names()


def test_stored_identity_is_reused_without_registering(tmp_path: Path) -> None:
    manager = FakeManager([])
    manager.tasks = []
    save_identity(tmp_path / "work", Identity(URL, 5, "w1", "secret-1"))
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    manager.wait_for("claim")
    _stop(stop, thread, result)
    assert "register" not in manager.names()
    assert manager.body("heartbeat")["starting"] is True, "a restart gives back old tasks"


def test_rejected_identity_registers_again(tmp_path: Path) -> None:
    manager = FakeManager([])
    manager.tasks = []
    save_identity(tmp_path / "work", Identity(URL, 4, "w1", "stale"))
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    manager.wait_for("claim")
    _stop(stop, thread, result)
    assert manager.names()[:2] == ["heartbeat", "register"]
    assert load_identity(tmp_path / "work") == Identity(URL, 5, "w1", "secret-1")


def test_a_401_mid_task_stops_the_render_and_registers_again(tmp_path: Path) -> None:
    """The manager forgot this runner (a database restored from a backup): it requeued
    the task, so the render stops at once, nothing is reported about it, and the worker
    registers again with the registration token."""
    manager = FakeManager([1])
    started = threading.Event()
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(started))
    assert started.wait(5)
    with manager.lock:
        manager.valid_secrets = {"secret-2"}
    manager.wait_for("register")
    _stop(stop, thread, result)
    assert not {"complete", "fail", "release"} & set(manager.names())


def test_a_deleted_runner_stops_the_render_and_exits_without_registering(
    tmp_path: Path,
) -> None:
    """The manager says an admin deleted this runner: the render stops, nothing more is
    sent (no outcome, no sign-off) and the worker exits with `EXIT_DELETED`."""
    manager = FakeManager([1])
    started = threading.Event()
    _stop_event, thread, result = _start(tmp_path, manager, _render_until_canceled(started))
    assert started.wait(5)
    with manager.lock:
        manager.deleted_secrets = {"secret-1"}
    thread.join(10)
    assert result == [EXIT_DELETED]
    assert manager.names().count("register") == 1
    assert not {"complete", "fail", "release", "sign-off"} & set(manager.names())


def test_a_deleted_runner_refuses_to_start_until_told_to_register_again(
    tmp_path: Path,
) -> None:
    manager = FakeManager([])
    manager.tasks = []
    manager.deleted_secrets = {"old"}
    save_identity(tmp_path / "work", Identity(URL, 4, "w1", "old"))
    _, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    thread.join(10)
    assert result == [EXIT_DELETED] and "register" not in manager.names()

    settings = replace(_settings(tmp_path), register_again=True)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    code = run_worker(
        settings,
        renderer=_render_until_canceled(threading.Event()),
        blender_versions=["4.2.0"],
        transport=httpx.MockTransport(manager.handler),
        stop=stop,
    )
    assert code == 0
    assert load_identity(tmp_path / "work") == Identity(URL, 5, "w1", "secret-1")


def test_bad_registration_token_exits_non_zero(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"detail": "invalid registration token"})

    code = run_worker(
        _settings(tmp_path),
        renderer=lambda job: RenderOutcome(ok=True),
        transport=httpx.MockTransport(handler),
        stop=threading.Event(),
    )
    assert code == 2


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape.blend", "a/../../b"])
def test_task_with_escaping_path_fails_without_writing(tmp_path: Path, bad: str) -> None:
    manager = FakeManager([1])
    manager.tasks[0]["files"][0]["path"] = bad
    rendered: list[int] = []

    def render(job: RenderJob) -> RenderOutcome:
        rendered.append(1)
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, render)
    manager.wait_for("fail")
    _stop(stop, thread, result)
    assert "cannot fetch the job's files" in manager.body("fail")["reason"]
    assert rendered == []
    assert "download" not in manager.names()


class SessionRenderer:
    """A renderer that holds something between tasks, like a Blender session."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, str | None]] = []
        self.closed = threading.Event()

    def __call__(self, job: RenderJob) -> RenderOutcome:
        self.keys.append((job.task.job_id, job.session_key))
        for frame in job.task.frames:
            job.on_frame_saved(frame, _write_frame(job, frame))
        return RenderOutcome(ok=True)

    def close(self) -> None:
        self.closed.set()


def test_tasks_of_one_job_share_a_session_key_and_the_agent_prefers_that_job(
    tmp_path: Path,
) -> None:
    manager = FakeManager([1])
    second = dict(manager.tasks[0], task_id=12, frames=[2])
    other_file = [{"path": "shot.blend", "sha256": BLEND_SHA, "size": len(BLEND)}]
    other_job = dict(
        manager.tasks[0], task_id=13, job_id=4, frames=[1], files=other_file, main_file="shot.blend"
    )
    manager.tasks += [second, other_job]
    renderer = SessionRenderer()
    stop, thread, result = _start(tmp_path, manager, renderer)
    deadline = time.monotonic() + 10
    # Three outcomes, then the claim that follows the third task (it names job 4).
    while (
        len([n for n in manager.names() if n in ("complete", "fail")]) < 3
        or manager.names().count("claim") < 4
    ):
        assert time.monotonic() < deadline, manager.names()
        time.sleep(0.02)
    _stop(stop, thread, result)

    (job_a, key_a1), (job_a2, key_a2), (job_b, key_b) = renderer.keys
    assert (job_a, job_a2, job_b) == (3, 3, 4)
    assert key_a1 is not None and key_a1 == key_a2, "same job, same files: one session"
    assert key_b != key_a1
    claims = [body for name, body in manager.calls if name == "claim"]
    assert "prefer_job" not in claims[0], "nothing held before the first task"
    assert claims[1]["prefer_job"] == "3", "then more of the job whose session we hold"
    assert claims[3]["prefer_job"] == "4"
    assert renderer.closed.is_set(), "the session ends when the worker stops"


def test_a_completion_brings_the_next_task_without_a_claim(tmp_path: Path) -> None:
    manager = FakeManager([1])
    manager.tasks += [dict(manager.tasks[0], task_id=n, frames=[n - 10]) for n in (12, 13)]
    manager.hands_out_next = True

    def renderer(job: RenderJob) -> RenderOutcome:
        for frame in job.task.frames:
            job.on_frame_saved(frame, _write_frame(job, frame))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    deadline = time.monotonic() + 10
    while manager.names().count("complete") < 3:
        assert time.monotonic() < deadline, manager.names()
        time.sleep(0.02)
    _stop(stop, thread, result)

    names = manager.names()
    third = [i for i, name in enumerate(names) if name == "complete"][2]
    assert names[:third].count("claim") == 1, "one claim, then each completion brought the next"
    completes = [body for name, body in manager.calls if name == "complete"]
    assert [c["frames"] for c in completes] == [[1], [2], [3]]
    assert all(c["next"] == "true" for c in completes)
    assert sorted(manager.uploads) == [1, 2, 3]


def test_a_task_handed_out_as_the_worker_stops_is_given_back(tmp_path: Path) -> None:
    manager = FakeManager([1])
    manager.tasks.append(dict(manager.tasks[0], task_id=12, frames=[2]))
    manager.hands_out_next = True
    go = threading.Event()

    def renderer(job: RenderJob) -> RenderOutcome:
        assert go.wait(10)
        for frame in job.task.frames:
            job.on_frame_saved(frame, _write_frame(job, frame))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    # The stop comes while the completion that hands out task 12 is on its way back.
    manager.on_call = lambda name: stop.set() if name == "complete" else None
    go.set()
    thread.join(10)
    assert not thread.is_alive(), "agent did not stop"
    assert result == [0]

    names = manager.names()
    assert names.count("complete") == 1
    assert manager.body("complete")["next"] == "true"
    assert manager.tasks == [], "task 12 was handed out with the completion"
    assert names.count("release") == 1, "and given back, not kept by a stopped worker"
    assert names.index("release") < names.index("sign-off")
    assert sorted(manager.uploads) == [1], "task 12 was never started"


def test_a_task_the_abandoned_poll_brings_after_the_sign_off_is_given_back(
    tmp_path: Path,
) -> None:
    """The stop comes while a claim waits; the manager answers that poll with a task only
    after the sign-off (it looked for work as the sign-off arrived). The worker gives the
    task back and signs off again before it exits, instead of leaving it to time out."""
    manager = FakeManager([1])
    signed_off = threading.Event()
    handler = manager.handler

    def late_answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/runner/tasks":
            stop.set()  # the stop comes while this claim waits
            assert signed_off.wait(10), "the worker signed off"
        answer = handler(request)
        if request.url.path == "/api/runner/sign-off":
            signed_off.set()
        return answer

    stop = threading.Event()
    code = run_worker(
        _settings(tmp_path),
        renderer=lambda job: RenderOutcome(ok=True),
        blender_versions=["4.2.0"],
        transport=httpx.MockTransport(late_answer),
        stop=stop,
    )
    assert code == 0
    names = manager.names()
    assert names.count("claim") == 1 and manager.tasks == [], "the poll brought task 11"
    assert "release" in names, "given back before the worker exited"
    assert names.index("sign-off") < names.index("release"), names
    assert names[-1] == "sign-off" and names.count("sign-off") == 2, names
    assert "fail" not in names, "given back, not failed"


# ------------------------------------------------------------------------- outbox


def _left_behind(tmp_path: Path, manager: FakeManager, *, finished: bool) -> TaskBox:
    """What a worker killed after rendering task 11 (frames 1-2) leaves on disk."""
    save_identity(tmp_path / "work", Identity(URL, 5, "w1", "secret-1"))
    box = Outbox(tmp_path / "work").open(TaskAssignment.model_validate(manager.tasks.pop()))
    for frame in (1, 2):
        path = box.frames_dir / f"{frame:04d}.png"
        path.write_bytes(b"\x89PNG frame %d" % frame)
        box.frame_saved(frame, path)
    if finished:
        box.finish(Outcome(ok=True))
    return box


def test_a_restarted_worker_delivers_its_outbox_before_giving_tasks_back(
    tmp_path: Path,
) -> None:
    manager = FakeManager([1, 2])
    box = _left_behind(tmp_path, manager, finished=True)
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    manager.wait_for("claim")
    _stop(stop, thread, result)
    names = manager.names()
    assert sorted(manager.uploads) == [1, 2]
    assert manager.body("complete")["frames"] == [1, 2]
    assert names.index("complete") < names.index("heartbeat"), (
        "delivered while the task is still ours; `starting` would give it back"
    )
    assert not box.root.exists()


def test_an_unfinished_render_in_the_outbox_is_dropped(tmp_path: Path) -> None:
    manager = FakeManager([1, 2])
    box = _left_behind(tmp_path, manager, finished=False)
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    manager.wait_for("claim")
    _stop(stop, thread, result)
    assert "upload" not in manager.names() and "complete" not in manager.names()
    assert manager.body("heartbeat")["starting"] is True, "the task goes back to the queue"
    assert not box.root.exists()


def test_an_outbox_task_given_to_someone_else_is_dropped(tmp_path: Path) -> None:
    manager = FakeManager([1, 2])
    box = _left_behind(tmp_path, manager, finished=True)
    served = manager.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if "/frames/" in request.url.path:
            return httpx.Response(409, json={"detail": "task 11 is not assigned to this runner"})
        return served(request)

    manager.handler = handler  # type: ignore[method-assign]
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    manager.wait_for("claim")
    _stop(stop, thread, result)
    assert "complete" not in manager.names()
    assert not box.root.exists()


def test_frames_and_outcome_wait_in_the_outbox_until_reported(tmp_path: Path) -> None:
    manager = FakeManager([1, 2])
    outbox = tmp_path / "work" / "outbox" / "task-11"
    seen: dict[str, object] = {}

    def renderer(job: RenderJob) -> RenderOutcome:
        manager.unreachable = True  # the manager goes away mid-task
        for frame in job.task.frames:
            job.on_frame_saved(frame, _write_frame(job, frame))
        return RenderOutcome(ok=True)

    def watch(name: str) -> None:
        if name == "complete":
            seen["outcome"] = json.loads((outbox / "outcome.json").read_text())
            lines = (outbox / "saved.txt").read_text().splitlines()
            seen["saved"] = [line.split("\t")[:2] for line in lines]

    manager.on_call = watch
    stop, thread, result = _start(tmp_path, manager, renderer)
    deadline = time.monotonic() + 10
    while not (outbox / "outcome.json").exists():
        assert time.monotonic() < deadline, "the outcome never reached the disk"
        time.sleep(0.02)
    assert sorted(manager.uploads) == [], "nothing could be delivered yet"
    manager.unreachable = False
    manager.wait_for("complete")
    _stop(stop, thread, result)
    assert seen["outcome"] == {"ok": True, "error": None, "log_tail": []}
    assert seen["saved"] == [["1", "0001.png"], ["2", "0002.png"]]
    assert sorted(manager.uploads) == [1, 2]
    assert not outbox.exists(), "emptied once reported"


def test_the_scenes_frame_rate_goes_with_one_progress_report_before_the_completion(
    tmp_path: Path,
) -> None:
    manager = FakeManager([1, 2])

    def renderer(job: RenderJob) -> RenderOutcome:
        # What Blender's `opened` event says of an NTSC scene: 30 fps over a base of 1.001.
        job.on_scene({"fps": 30, "fps_base": 1.001, "engine": "CYCLES"})
        for frame in job.task.frames:
            job.on_frame_saved(frame, _write_frame(job, frame))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete")
    _stop(stop, thread, result)

    reports = [body for name, body in manager.calls if name == "progress"]
    rates = [r["scene_fps"] for r in reports if r.get("scene_fps") is not None]
    assert rates == [pytest.approx(30 / 1.001)], "sent once, whatever the number of reports"
    first_rate = next(i for i, (n, b) in enumerate(manager.calls) if b.get("scene_fps"))
    completion = next(i for i, (n, _) in enumerate(manager.calls) if n == "complete")
    assert first_rate < completion, "the manager knows the rate before the task completes"


def test_old_task_logs_are_removed_after_a_task(tmp_path: Path) -> None:
    """A long-running node keeps its newest task logs (`cache.TASK_LOGS_KEPT`), not all."""
    logs = tmp_path / "work" / "logs"
    logs.mkdir(parents=True)
    for n in range(TASK_LOGS_KEPT + 5):
        old = logs / f"job-1-task-{n}.log"
        old.write_text("Fra:1 old\n")
        os.utime(old, (1_000 + n, 1_000 + n))
    manager = FakeManager([1])

    def renderer(job: RenderJob) -> RenderOutcome:
        job.log_path.write_text("Fra:1 this task\n")
        job.on_frame_saved(1, _write_frame(job, 1))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete")
    _stop(stop, thread, result)
    kept = {p.name for p in logs.iterdir()}
    assert len(kept) == TASK_LOGS_KEPT
    assert "job-3-task-11.log" in kept, "the newest (this task's) stays"
    assert not {f"job-1-task-{n}.log" for n in range(6)} & kept, "the oldest went"


def test_partial_downloads_a_crash_left_behind_are_removed_at_start(tmp_path: Path) -> None:
    tmp = tmp_path / "work" / "cache" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "0123456789abcdef-5f2c").write_bytes(b"half a texture")
    manager = FakeManager([])
    manager.tasks = []
    stop, thread, result = _start(tmp_path, manager, _render_until_canceled(threading.Event()))
    manager.wait_for("claim")
    _stop(stop, thread, result)
    assert list(tmp.iterdir()) == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg on PATH")
@pytest.mark.parametrize(("ffmpeg", "videos"), [(None, True), ("none", False), ("NONE", False)])
def test_ffmpeg_none_keeps_video_tasks_off_a_machine_with_ffmpeg(
    tmp_path: Path, ffmpeg: str | None, videos: bool
) -> None:
    """`--ffmpeg none` does what `farmhand worker --help` says: no video tasks, though
    ffmpeg is on PATH (it was `error: ffmpeg not found at 'none'`)."""
    manager = FakeManager([])
    manager.tasks = []
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    code = run_worker(
        replace(_settings(tmp_path), ffmpeg=ffmpeg),
        renderer=_render_until_canceled(threading.Event()),
        blender_versions=["4.2.0"],
        transport=httpx.MockTransport(manager.handler),
        stop=stop,
    )
    assert code == 0
    offered = manager.body("register")["capabilities"]["task_types"]
    assert ("video" in offered) is videos, offered
