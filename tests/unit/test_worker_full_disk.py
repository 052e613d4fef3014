"""A worker whose work dir fills up mid-render gives the task back, as it does when the
.blend's download finds the disk full: no failure counted, no blocklist entry, and the
worker takes no task for a while (docs/DEPLOY.md).

The agent runs against the in-memory fake manager with the real Blender plumbing
(`BlenderTaskRenderer`, `BlenderProcess`, its output reader) driving a fake Blender that
speaks the driver's protocol and, when told to, fails to save a frame in the very words
Blender 3.4 uses on a full disk. Each way the disk can be full mid-task is covered:

- Blender cannot save the frame (`Render error (No space left on device) cannot save`);
- the outbox cannot write the task's outcome (`outcome.json`);
- the task's own log file cannot be flushed (a real ENOSPC: the log is `/dev/full`),
  which used to kill the thread reading Blender's output and leave the task hanging.

Each task is given back with a reason naming the disk and the file, the worker pauses
before its next claim, and that next task (with room again) completes. Waits are bounded:
a hang fails the test. A scene whose own output path is wrong, or whose full disk is not
the worker's, still fails the task: every worker would.
"""

from __future__ import annotations

import errno
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from structlog.testing import capture_logs

from farmhand.worker import agent as agent_module
from farmhand.worker.agent import run_worker
from farmhand.worker.blender import process as process_module
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.renderer import BlenderTaskRenderer
from tests.unit.test_outbox_delivery import _disk_full_on
from tests.unit.test_worker_agent import FakeManager, _settings

PAUSE = 0.25
"""`FAULT_PAUSE_FIRST` in these tests: short, and unlike any other wait of the worker."""

FAKE_BLENDER = r'''
"""Speaks the driver's protocol. FULL_DISK_FRAMES: the frames it cannot save, saying so
as Blender 3.4 does; FULL_DISK_PATH: where those frames go (default: the output dir, i.e.
the worker's work dir; else a path of the scene's own, a File Output node's, say);
FULL_DISK_ERROR: the error's text (default: a full disk). FILE_OUTPUT_ERROR: a File Output
node's pass (under the task's passes folder) cannot be saved, for that reason, said as
Blender 3.4 says it, while the frame itself is saved as ever."""
import json, os, sys
from PIL import Image

MARK = "@@farmhand@@ "
failing = {int(f) for f in os.environ.get("FULL_DISK_FRAMES", "").split(",") if f}
elsewhere = os.environ.get("FULL_DISK_PATH")
reason = os.environ.get("FULL_DISK_ERROR", "No space left on device")

def emit(event, **fields):
    fields["event"] = event
    print(MARK + json.dumps(fields), flush=True)

emit("ready", version="4.2.0")
for line in sys.stdin:
    command = json.loads(line)
    if command["cmd"] == "quit":
        break
    if command["cmd"] == "open":
        emit("opened", scene="Scene", engine="CYCLES")
        continue
    for frame in command["frames"]:
        emit("frame_started", frame=frame)
        print("Fra:%d Mem:24.81M (Peak 34.18M) | Time:00:00.84 | Scene, ViewLayer | "
              "Sample 2/2" % frame, flush=True)
        path = os.path.join(command["output_dir"], "frame_%04d.png" % frame)
        if os.environ.get("FILE_OUTPUT_ERROR"):
            passed = os.path.join(command["output_dir"], "passes", "00-File_Output",
                                  "Image%04d.png" % frame)
            for said in ("imb_savepng: Cannot open file for writing: '%s'" % passed,
                         "%s: %s" % (passed, os.environ["FILE_OUTPUT_ERROR"]),
                         "Cannot save Node File Output to %s" % passed):
                print(said, flush=True)
        if frame in failing:
            target = os.path.join(elsewhere, "Image%04d.png" % frame) if elsewhere else path
            message = "Error: Render error (%s) cannot save: '%s'" % (reason, target)
            for said in ("libpng error: Write Error", "%s: %s" % (target, reason),
                         " Time: 00:01.14 (Saving: 00:00.29)", message):
                print(said, flush=True)
            emit("error", message=message, traceback="RuntimeError: " + message)
            break
        Image.new("RGB", (64, 48), (frame * 20 % 255, 40, 90)).save(path)
        emit("frame_saved", frame=frame, path=path, seconds=0.01, width=64, height=48)
    else:
        emit("render_done", frames=len(command["frames"]))
emit("bye")
'''


@pytest.fixture(scope="module")
def full_disk_blender(tmp_path_factory: pytest.TempPathFactory) -> BlenderInstall:
    path = tmp_path_factory.mktemp("full-disk-blender") / "blender"
    path.write_text(f"#!{sys.executable}\n{FAKE_BLENDER}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return BlenderInstall("executable", str(path), "4.2.0")


class RecordingStop(threading.Event):
    """The worker's stop event, noting how long each wait on it was meant to last: the
    pause after a give-back is `stop.wait(FAULT_PAUSE_FIRST)`."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait for `check`, at most `timeout` seconds: a hang fails the test, saying what."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


@pytest.fixture
def manager() -> FakeManager:
    """Two tasks of one job: frame 1 (task 11), then frame 2 (task 12)."""
    fake = FakeManager([1])
    fake.tasks.append(dict(fake.tasks[0], task_id=12, frames=[2]))
    return fake


@pytest.fixture
def worker(
    tmp_path: Path,
    manager: FakeManager,
    full_disk_blender: BlenderInstall,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[], RecordingStop]]:
    """Starts the worker (with the real Blender renderer) when called; stops it after."""
    monkeypatch.setattr(agent_module, "FAULT_PAUSE_FIRST", PAUSE)
    stop = RecordingStop()
    result: list[int] = []
    renderer = BlenderTaskRenderer(full_disk_blender, pid_dir=tmp_path / "pids")
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

    def start() -> RecordingStop:
        thread.start()
        return stop

    yield start
    stop.set()
    thread.join(20)
    assert not thread.is_alive(), "the worker did not stop"
    assert result == [0]


def _given_back_and_paused(
    manager: FakeManager, stop: RecordingStop, where: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    """Task 11 went back to the queue saying the disk is full and where, without a failure;
    the worker paused before its next claim, then rendered task 12 (it had room again)."""
    _until(lambda: "complete" in manager.names(), "the task after the give-back to complete")
    names = manager.names()
    assert "fail" not in names, manager.body("fail")
    release = manager.body("release")
    reason = release["reason"]
    assert reason.startswith("worker w1 cannot work: [Errno 28] No space left on device"), reason
    assert str(where) in reason, reason
    assert PAUSE in stop.waits, "the worker paused after the give-back"
    assert manager.body("complete")["frames"] == [2]
    faults = [e for e in logs if e["log_level"] == "error" and "cannot work" in str(e["event"])]
    assert len(faults) == 1, logs
    assert str(where) in str(faults[0]["error"]), faults
    assert any(e["event"] == "this machine works again; taking tasks" for e in logs), logs


def test_a_frame_blender_cannot_save_on_a_full_work_dir_gives_the_task_back(
    tmp_path: Path,
    manager: FakeManager,
    worker: Callable[[], RecordingStop],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FULL_DISK_FRAMES", "1")
    with capture_logs() as logs:
        stop = worker()
        frame = tmp_path / "work" / "outbox" / "task-11" / "frames" / "frame_0001.png"
        _given_back_and_paused(manager, stop, frame, logs)


def test_an_outcome_the_outbox_cannot_write_gives_the_task_back(
    tmp_path: Path,
    manager: FakeManager,
    worker: Callable[[], RecordingStop],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blender saved the frame; then the disk was full for the outcome."""
    _disk_full_on(monkeypatch, "outcome.json")
    with capture_logs() as logs:
        stop = worker()
        outcome = tmp_path / "work" / "outbox" / "task-11" / "outcome.json"
        _given_back_and_paused(manager, stop, outcome, logs)


class FillingUp:
    """The task's log file on a disk that fills up as Blender renders: lines are taken
    until the first progress line (`Fra:`), then every flush fails with ENOSPC, on the
    thread reading Blender's output, as QA saw it (`line self.log.flush() OSError:
    [Errno 28] No space left on device`)."""

    def __init__(self, real: IO[str]) -> None:
        self.real = real
        self.full = False

    def write(self, text: str) -> int:
        self.full = self.full or text.startswith("Fra:")
        return self.real.write(text)

    def flush(self) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real.flush()

    def close(self) -> None:
        self.real.close()


def _log_fills_up_mid_render(monkeypatch: pytest.MonkeyPatch, log_file: Path) -> None:
    made = process_module._Listener.__init__

    def filling_up(
        listener: Any, log_path: Path, on_event: Callable[..., None], on_log: Callable[..., None]
    ) -> None:
        made(listener, log_path, on_event, on_log)
        if log_path == log_file:
            listener.log = FillingUp(listener.log)

    monkeypatch.setattr(process_module._Listener, "__init__", filling_up)


@pytest.mark.parametrize("when", ["from the first line", "mid-render"])
def test_a_task_log_that_cannot_be_written_neither_hangs_the_task_nor_fails_it(
    tmp_path: Path,
    manager: FakeManager,
    worker: Callable[[], RecordingStop],
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """The worker's copy of the task's log cannot be flushed: from its first line (it is
    `/dev/full`, a real ENOSPC from the kernel), or from Blender's first progress line
    on, on the thread reading Blender's output, which used to die there and leave the
    task "active" for ever. Blender's output is still read to the end (the render ends:
    the task is given back only then), and the task goes back like any other full-disk
    task."""
    log_file = tmp_path / "work" / "logs" / "job-3-task-11.log"
    if when == "mid-render":
        _log_fills_up_mid_render(monkeypatch, log_file)
    else:
        log_file.parent.mkdir(parents=True)
        log_file.symlink_to("/dev/full")
    with capture_logs() as logs:
        stop = worker()
        _given_back_and_paused(manager, stop, log_file, logs)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/nonexistent/farmhand/renders", "No such file or directory"),
        ("/mnt/full-share/renders", "No space left on device"),
    ],
    ids=["a path that does not exist", "a full disk that is not the worker's"],
)
def test_a_scene_that_writes_where_it_cannot_still_fails_the_task(
    manager: FakeManager,
    worker: Callable[[], RecordingStop],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    error: str,
) -> None:
    """A File Output path of the scene's own: every worker would fail the same way, so the
    task fails (its attempts count) instead of going round the farm for ever."""
    monkeypatch.setenv("FULL_DISK_FRAMES", "1")
    monkeypatch.setenv("FULL_DISK_PATH", path)
    monkeypatch.setenv("FULL_DISK_ERROR", error)
    stop = worker()
    _until(lambda: "complete" in manager.names(), "the next task to complete")
    assert "release" not in manager.names()
    reason = manager.body("fail")["reason"]
    assert reason == f"Error: Render error ({error}) cannot save: '{path}/Image0001.png'"
    assert PAUSE not in stop.waits, "no pause: the machine is fine"


@pytest.mark.parametrize(
    ("error", "given_back"),
    [("Not a directory", False), ("No space left on device", True)],
    ids=["the scene's fault", "this machine's full disk"],
)
def test_a_file_output_pass_that_cannot_be_saved_does_not_complete_the_task(
    tmp_path: Path,
    manager: FakeManager,
    worker: Callable[[], RecordingStop],
    monkeypatch: pytest.MonkeyPatch,
    error: str,
    given_back: bool,
) -> None:
    """Blender renders on and saves the frame when a File Output node's pass cannot be
    saved: the task completed with the pass silently missing (QA round 13). It fails
    now, with Blender's line as its reason; on this machine's full disk it goes back."""
    monkeypatch.setenv("FILE_OUTPUT_ERROR", error)
    stop = worker()
    first = "release" if given_back else "fail"
    _until(lambda: first in manager.names(), f"task 11's {first}")
    assert "complete" not in manager.names()[: manager.names().index(first)], "it completed"
    reason = manager.body(first)["reason"]
    passed = tmp_path / "work" / "outbox" / "task-11" / "frames" / "passes"
    assert str(passed) in reason, reason
    assert error in reason, reason
    if given_back:
        _until(lambda: PAUSE in stop.waits, "the pause after the give-back")
    else:
        # Task 12's pass fails alike: both fail, one after the other, with no pause.
        _until(lambda: manager.names().count("fail") == 2, "task 12 to fail too")
        assert PAUSE not in stop.waits, "no pause: the machine is fine"
