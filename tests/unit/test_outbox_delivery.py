"""What a task made reaches the manager whole, live or from the outbox after a restart,
in the worker agent against the in-memory fake manager (no Blender):

- a tile task whose scene has File Output nodes uploads its tile alone and says once in
  its log that those files are not kept (the manager refuses files "for a frame" of a
  tile task, which owns no frames);
- a box delivered after a restart sends each frame with its passes and preview, the log
  lines the manager does not have yet (and none twice), and the frames' Blender seconds
  and peak memory, as the live task would have; a box of an older worker (no details,
  no count of the lines sent) is still delivered;
- a box that cannot be written (a full disk) is removed, the task is given back (not
  failed) saying that the disk is full and where, and the next task runs;
- a box without an outcome is given back, and the log says what the manager answered.
"""

from __future__ import annotations

import errno
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.client import FarmhandError
from farmhand.shared.schemas import TaskAssignment, TaskOutcome
from farmhand.worker import agent as agent_module
from farmhand.worker import outbox as outbox_module
from farmhand.worker.agent import RenderJob, RenderOutcome
from farmhand.worker.identity import Identity, save_identity
from farmhand.worker.outbox import (
    OLD_BOX_NOTE,
    RESTART_NOTE,
    Outbox,
    Outcome,
    deliver,
)
from farmhand.worker.uploads import TILE_FILES_NOT_KEPT
from tests.unit.test_worker_agent import URL, FakeManager, _start, _stop, _write_frame

EXTRA = re.compile(r"/api/runner/tasks/(\d+)/frames/(-?\d+)/(pass|preview)/(.+)")
TILE = {"frame": 1, "column": 0, "row": 0, "columns": 2, "rows": 1, "overlap": 32}


class OutputsManager(FakeManager):
    """The fake manager, also taking passes, previews and tiles as the real one does: a
    file "for a frame" of a tile task is a 400, since a tile task owns no frames."""

    def __init__(self, frames: list[int], tile: dict[str, int] | None = None) -> None:
        super().__init__(frames)
        if tile is not None:
            self.tasks[0] |= {"tile": tile}
        self.tile_task = tile is not None
        self.extras: list[tuple[int, str, str, bytes]] = []
        self.tiles: list[bytes] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "PUT" and "/frames/" in path and self.tile_task:
            frame = path.split("/frames/")[1].split("/")[0].split(".")[0]
            with self.lock:
                self.calls.append(("refused", {"path": path}))
            return httpx.Response(400, json={"detail": f"frame {frame} is not part of task 11"})
        if request.method == "PUT" and (extra := EXTRA.fullmatch(path)):
            with self.lock:
                self.calls.append(("extra", {"frame": int(extra[2]), "kind": extra[3]}))
                self.extras.append((int(extra[2]), extra[3], extra[4], request.read()))
            return httpx.Response(201, json={"id": 1, "frame": 1, "sha256": "a" * 64, "size": 1})
        if request.method == "PUT" and path.endswith("/tile.png"):
            with self.lock:
                self.calls.append(("tile", {}))
                self.tiles.append(request.read())
            return httpx.Response(201, json={"id": 1, "frame": None, "sha256": "a" * 64, "size": 1})
        return super().handler(request)

    def progress_bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for name, body in self.calls if name == "progress"]

    def log_lines(self) -> list[str]:
        return [line for body in self.progress_bodies() for line in body["log_lines"]]


def _with_files(job: RenderJob, frame: int, seconds: float, peak: int) -> Path:
    """What Blender's process reports of a saved frame, in its order: the frame's time
    and memory, its preview and File Output file, then the frame itself."""
    preview = job.output_dir / "previews" / f"{frame:04d}.jpg"
    preview.parent.mkdir(parents=True, exist_ok=True)
    preview.write_bytes(b"JPEG preview %d" % frame)
    name = f"passes/00-File_Output/Image{frame:04d}.png"
    extra = job.output_dir / name
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_bytes(b"PNG pass %d" % frame)
    job.on_frame_stats(frame, seconds, peak)
    job.on_frame_files(frame, preview, [(name, extra)])
    return _write_frame(job, frame)


# ------------------------------------------------------------ tiles and File Output


def test_a_tile_with_file_output_files_uploads_the_tile_and_says_why_not_the_files(
    tmp_path: Path,
) -> None:
    manager = OutputsManager([], tile=TILE)

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_log("Fra:1 rendering the tile")
        job.on_frame_saved(1, _with_files(job, 1, 2.5, 300_000_000))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete")
    _stop(stop, thread, result)

    names = manager.names()
    assert "refused" not in names and "fail" not in names, names
    assert manager.tiles == [b"\x89PNG frame 1"], "the tile went up, as a tile"
    assert manager.extras == [], "neither its File Output file nor a preview"
    assert manager.body("complete")["frames"] == [1]
    lines = manager.log_lines()
    assert lines.count(TILE_FILES_NOT_KEPT) == 1, lines
    assert lines == ["Fra:1 rendering the tile", TILE_FILES_NOT_KEPT]


# ------------------------------------------------------------ delivery after a restart


def test_a_box_delivered_after_a_restart_sends_all_a_live_task_would(tmp_path: Path) -> None:
    """The manager goes away after frame 1 (its log lines and frame delivered live), the
    worker renders frame 2 and is killed before it can deliver. Started again, it sends
    what the manager lacks: frame 2 with its pass and preview (frame 1 is not sent again),
    the log lines, the figures and the scene's frame rate, which Blender told only after
    the manager went away (so the job's video is made at the scene's rate)."""
    first = OutputsManager([1, 2])
    box_dir = tmp_path / "first" / "work" / "outbox" / "task-11"
    kept = tmp_path / "second" / "work" / "outbox" / "task-11"

    def renderer(job: RenderJob) -> RenderOutcome:
        for n in (1, 2, 3):
            job.on_log(f"line {n}")
        job.on_frame_saved(1, _with_files(job, 1, 1.25, 200_000_000))
        deadline = time.monotonic() + 30  # generous: a loaded machine may be slow
        noted = job.output_dir.parent / "uploaded.txt"
        while len(first.log_lines()) < 3 or not (noted.exists() and noted.read_text()):
            assert time.monotonic() < deadline, first.names()
            time.sleep(0.01)
        first.unreachable = True  # the manager dies mid-task
        job.on_scene({"fps": 30000, "fps_base": 1001})
        for n in (4, 5, 6):
            job.on_log(f"line {n}")
        job.on_frame_saved(2, _with_files(job, 2, 1.75, 500_000_000))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path / "first", first, renderer)
    deadline = time.monotonic() + 10
    while not (box_dir / "outcome.json").exists():
        assert time.monotonic() < deadline, "the outcome never reached the disk"
        time.sleep(0.02)
    shutil.copytree(box_dir, kept)  # what the disk holds when the worker is killed now
    _stop(stop, thread, result)
    assert first.log_lines() == ["line 1", "line 2", "line 3"]

    second = OutputsManager([])
    second.tasks = []
    save_identity(tmp_path / "second" / "work", Identity(URL, 5, "w1", "secret-1"))
    stop, thread, result = _start(tmp_path / "second", second, lambda job: RenderOutcome(ok=True))
    second.wait_for("claim")
    _stop(stop, thread, result)

    assert sorted(second.uploads) == [2], "frame 1 reached the manager live"
    assert sorted((f, kind, name, data) for f, kind, name, data in second.extras) == [
        (2, "pass", "passes/00-File_Output/Image0002.png", b"PNG pass 2"),
        (2, "preview", "0002.jpg", b"JPEG preview 2"),
    ]
    assert second.log_lines() == ["line 4", "line 5", "line 6"], "the rest, none twice"
    assert second.progress_bodies()[0]["scene_fps"] == pytest.approx(29.97003)
    figures = second.progress_bodies()[-1]
    assert figures["render_seconds"] == pytest.approx(3.0)
    assert figures["peak_memory_bytes"] == 500_000_000
    assert figures["frames_done"] == 2
    assert second.body("complete") == {
        "frames": [1, 2],
        "log_lines": [RESTART_NOTE],
        "next": None,
    }
    names = second.names()
    assert names.index("complete") < names.index("heartbeat")
    assert max(i for i, n in enumerate(names) if n == "progress") < names.index("complete")
    assert not kept.exists()


class RecordingClient:
    """The runner client's task calls, recorded; `release` answers `release_answer`."""

    def __init__(self, release_answer: TaskOutcome | FarmhandError | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.release_answer = release_answer

    def upload_output(self, job_id: int, task_id: int, frame: int, path: Path) -> None:
        self.calls.append(("frame", frame, path.read_bytes()))

    def upload_extra(
        self, job_id: int, task_id: int, frame: int, kind: str, name: str, path: Path
    ) -> None:
        self.calls.append((kind, frame, name))

    def progress(self, task_id: int, progress: Any) -> None:
        self.calls.append(("progress", progress.log_lines, progress.render_seconds))

    def complete(self, task_id: int, frames: list[int], lines: list[str]) -> None:
        self.calls.append(("complete", frames, lines))

    def fail(self, task_id: int, reason: str, lines: list[str]) -> None:
        self.calls.append(("fail", reason, lines))

    def release(self, task_id: int, reason: str) -> TaskOutcome:
        self.calls.append(("release", task_id))
        if isinstance(self.release_answer, FarmhandError):
            raise self.release_answer
        assert self.release_answer is not None
        return self.release_answer


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[str] = []

    def bind(self, **_: object) -> RecordingLog:
        return self

    def info(self, event: str, **_: object) -> None:
        self.events.append(event)

    warning = error = info


def _task() -> TaskAssignment:
    return TaskAssignment.model_validate(FakeManager([1, 2]).tasks[0])


def test_a_box_of_an_older_worker_is_delivered_with_its_whole_log(tmp_path: Path) -> None:
    """An older worker wrote `frame<TAB>name` lines and no count of the lines sent."""
    box = Outbox(tmp_path).open(_task())
    (box.root / "log_sent.txt").unlink()
    for frame in (1, 2):
        (box.frames_dir / f"{frame:04d}.png").write_bytes(b"frame %d" % frame)
    (box.root / "saved.txt").write_text("1\t0001.png\n2\t0002.png\n")
    (box.root / "log.txt").write_text("line 1\nline 2\n")
    box.finish(Outcome(ok=True))
    client = RecordingClient()

    deliver(box, client, threading.Event(), RecordingLog())  # type: ignore[arg-type]

    assert client.calls == [
        ("frame", 1, b"frame 1"),
        ("frame", 2, b"frame 2"),
        ("progress", [OLD_BOX_NOTE, "line 1", "line 2"], None),
        ("complete", [1, 2], [RESTART_NOTE]),
    ]
    assert not box.root.exists()


def test_a_failed_render_in_the_box_delivers_its_frames_and_log_then_fails(
    tmp_path: Path,
) -> None:
    """As live: the frames saved go up, the log too, then the failure with its reason."""
    box = Outbox(tmp_path).open(_task())
    path = box.frames_dir / "0001.png"
    path.write_bytes(b"frame 1")
    box.frame_saved(1, path)
    box.log_line("Error: out of memory")
    box.finish(Outcome(False, "Blender crashed", ["Error: out of memory"]))
    client = RecordingClient()

    deliver(box, client, threading.Event(), RecordingLog())  # type: ignore[arg-type]

    assert client.calls == [
        ("frame", 1, b"frame 1"),
        ("progress", ["Error: out of memory"], None),
        ("fail", "Blender crashed", [RESTART_NOTE]),
    ]


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            FarmhandError("task 11 is not assigned to this runner any more", 409),
            "outbox: the manager answered that the task is no longer this worker's; dropped",
        ),
        (
            TaskOutcome(task_status="queued", job_status="active"),
            "outbox: the render was not finished; the task was given back",
        ),
    ],
)
def test_an_unfinished_box_says_what_the_manager_answered(
    tmp_path: Path, answer: TaskOutcome | FarmhandError, said: str
) -> None:
    """Another worker may have completed the task meanwhile: then the log must not say
    the task goes back to the queue."""
    box = Outbox(tmp_path).open(_task())
    client = RecordingClient(answer)
    logged = RecordingLog()

    deliver(box, client, threading.Event(), logged)  # type: ignore[arg-type]

    assert client.calls == [("release", 11)]
    assert logged.events == [said]
    assert not box.root.exists()


# ------------------------------------------------------------------ a full disk


def _disk_full_on(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writing `name` in a box fails as on a full disk (once: the next task has room)."""
    write = outbox_module._write_atomically
    failed: list[Path] = []

    def full(path: Path, text: str, **options: bool) -> None:
        if path.name == name and not failed:
            failed.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", str(path) + ".tmp")
        write(path, text, **options)

    monkeypatch.setattr(outbox_module, "_write_atomically", full)


def test_a_full_disk_before_the_render_gives_the_task_back_and_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The box cannot be opened: nothing was rendered, and the disk is this machine's
    fault, so the task goes back to the queue (no attempt, no blocklist), not failed;
    the worker takes no task for a while (`FAULT_PAUSE_FIRST`, shortened here)."""
    monkeypatch.setattr(agent_module, "FAULT_PAUSE_FIRST", 0.2)
    manager = FakeManager([1])
    manager.tasks.append(dict(manager.tasks[0], task_id=12, frames=[2]))
    _disk_full_on(monkeypatch, "task.json")
    stop, thread, result = _start(tmp_path, manager, _rendering_each_frame([]))
    manager.wait_for("complete")
    _stop(stop, thread, result)

    assert "fail" not in manager.names()
    reason = manager.body("release")["reason"]
    assert "cannot work" in reason and "No space left on device" in reason, reason
    assert not (tmp_path / "work" / "outbox" / "task-11").exists()
    assert manager.body("complete")["frames"] == [2], "and the next task ran"


def _rendering_each_frame(boxes: list[Path]) -> Callable[[RenderJob], RenderOutcome]:
    def renderer(job: RenderJob) -> RenderOutcome:
        boxes.append(job.output_dir.parent)
        for frame in job.task.frames:
            job.on_frame_saved(frame, _write_frame(job, frame))
        return RenderOutcome(ok=True)

    return renderer


@pytest.mark.parametrize("name", ["outcome.json"])
def test_a_full_disk_gives_the_task_back_removes_its_box_and_the_next_task_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The render went well, then the box could not be written: the worker's own disk,
    so the task goes back (no failure counted) and the box's space is the next task's."""
    monkeypatch.setattr(agent_module, "FAULT_PAUSE_FIRST", 0.2)
    manager = FakeManager([1])
    manager.tasks.append(dict(manager.tasks[0], task_id=12, frames=[2]))
    boxes: list[Path] = []
    _disk_full_on(monkeypatch, name)
    stop, thread, result = _start(tmp_path, manager, _rendering_each_frame(boxes))
    manager.wait_for("complete")
    _stop(stop, thread, result)

    assert "fail" not in manager.names()
    reason = manager.body("release")["reason"]
    box = tmp_path / "work" / "outbox" / "task-11"
    assert "cannot work: [Errno 28] No space left on device" in reason, reason
    assert str(box / name) in reason, reason
    assert not box.exists(), "the box's files are gone"
    assert manager.body("complete")["frames"] == [2], "and the next task ran"
    assert not (tmp_path / "work" / "outbox" / "task-12").exists()
