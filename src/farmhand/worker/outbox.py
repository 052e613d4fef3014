"""The worker's outbox: a task's results on disk until the manager has them.

While the manager is unreachable the agent keeps rendering; its frames, log lines and
the render's outcome must not live only in memory, or a worker that is killed (or loses
power) before the manager is back loses finished work that nobody will redo until a
heartbeat timeout, and then redoes it from scratch.

Each task the worker runs has a box, `<work_dir>/outbox/task-<id>/`:

- `task.json`     the assignment (what to report about, to whom);
- `frames/`       where Blender writes the frames (the render's output directory);
- `saved.txt`     `frame<TAB>file name` per line, appended once the file is verified;
- `log.txt`       the task's log lines as they come;
- `outcome.json`  written (atomically) once the render is over: ok or not, the error,
                  the log tail.

The agent deletes the box once the outcome is reported (or the task is known to be
gone). A box found at start-up is what a previous run of this worker could not deliver:

- with an outcome: its frames are uploaded and the outcome reported, if the manager
  still counts the task as this worker's (anything else answers 404/409 and the box is
  dropped) — a restart does not render a finished task again;
- without one (killed mid-render): dropped; the manager requeues the task when the
  worker says it is starting, and another attempt renders it whole. Half a task is not
  resumed: a task's frames are rendered by one attempt.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.client import FarmhandError, RunnerClient
from farmhand.client.retry import RetryAborted, RetryPolicy, call_with_retry
from farmhand.shared.schemas import TaskAssignment
from farmhand.worker.uploads import upload_rendered

log: FilteringBoundLogger = structlog.get_logger(__name__)
RESTART_NOTE = "[farmhand worker] restarted; delivered this task's results from its outbox"

MAX_LOG_BYTES = 4 * 1024 * 1024
"""A box's log file stops growing here (the full log is in the worker's own log too)."""


@dataclass(frozen=True)
class Outcome:
    """How the render ended, as the agent decided (frames checked, errors read)."""

    ok: bool
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)


def _write_atomically(path: Path, text: str) -> None:
    """Write, fsync, rename: a reader sees the old file or the whole new one."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)


class TaskBox:
    """One task's results on disk. Methods may be called from any of the agent's threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.frames_dir = root / "frames"
        self._lock = threading.Lock()

    @property
    def task(self) -> TaskAssignment:
        return TaskAssignment.model_validate_json((self.root / "task.json").read_text("utf-8"))

    def frame_saved(self, frame: int, path: Path) -> None:
        """The frame's file is written and verified (the renderer's `on_frame_saved`)."""
        with self._lock, (self.root / "saved.txt").open("a", encoding="utf-8") as out:
            out.write(f"{frame}\t{path.name}\n")
            out.flush()
            os.fsync(out.fileno())

    def recording(self, then: Callable[[int, Path], None]) -> Callable[[int, Path], None]:
        """An `on_frame_saved` that notes the frame here first, then calls `then` (upload)."""

        def call(frame: int, path: Path) -> None:
            self.frame_saved(frame, path)
            then(frame, path)

        return call

    def logging(self, then: Callable[[str], None]) -> Callable[[str], None]:
        """An `on_log` that keeps the line here first, then calls `then` (progress)."""

        def call(line: str) -> None:
            self.log_line(line)
            then(line)

        return call

    def log_line(self, line: str) -> None:
        with self._lock:
            path = self.root / "log.txt"
            if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
                return
            with path.open("a", encoding="utf-8") as out:
                out.write(line.rstrip("\n") + "\n")

    def finish(self, outcome: Outcome) -> None:
        """The render is over; from now on a restart delivers instead of dropping."""
        data = {"ok": outcome.ok, "error": outcome.error, "log_tail": outcome.log_tail}
        with self._lock:
            _write_atomically(self.root / "outcome.json", json.dumps(data))

    def outcome(self) -> Outcome | None:
        try:
            data = json.loads((self.root / "outcome.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return Outcome(bool(data["ok"]), data.get("error"), list(data.get("log_tail") or []))

    def saved_frames(self) -> dict[int, Path]:
        """Frames whose file was verified, by number, with the file (if it is still there)."""
        try:
            lines = (self.root / "saved.txt").read_text("utf-8").splitlines()
        except OSError:
            return {}
        found: dict[int, Path] = {}
        for line in lines:
            number, _, name = line.partition("\t")
            path = self.frames_dir / Path(name).name
            if number.lstrip("-").isdigit() and name and path.is_file():
                found[int(number)] = path
        return dict(sorted(found.items()))

    def log_tail(self, lines: int) -> list[str]:
        try:
            text = (self.root / "log.txt").read_text("utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Outbox:
    """The boxes of one worker, under `<work_dir>/outbox`."""

    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / "outbox"

    def open(self, task: TaskAssignment) -> TaskBox:
        """A fresh, empty box for a task just claimed (an older one of it is replaced)."""
        box = TaskBox(self.root / f"task-{task.task_id}")
        box.discard()
        box.frames_dir.mkdir(parents=True)
        _write_atomically(box.root / "task.json", task.model_dump_json())
        return box

    def pending(self) -> list[TaskBox]:
        """Boxes a previous run left behind, oldest task first; unreadable ones are dropped."""
        if not self.root.is_dir():
            return []
        boxes = []
        for path in sorted(self.root.glob("task-*"), key=lambda p: p.name):
            box = TaskBox(path)
            try:
                box.task  # noqa: B018 - readable, or it is no use to anyone
            except (OSError, ValueError):
                box.discard()
                continue
            boxes.append(box)
        return boxes


def deliver_pending(
    outbox: Outbox,
    client: RunnerClient,
    stop: threading.Event,
    logger: FilteringBoundLogger | None = None,
) -> None:
    """At start-up: report what a previous run of this worker rendered but never delivered.

    Call before the `starting` heartbeat (which gives back every task still counted as
    this worker's): a task delivered here is completed, not rendered again. Waits (and
    retries) while the manager is unreachable; returns early if `stop` is set, leaving
    the remaining boxes for the next start.
    """
    for box in outbox.pending():
        if stop.is_set():
            return
        deliver(box, client, stop, logger or log)


def deliver(
    box: TaskBox, client: RunnerClient, stop: threading.Event, logger: FilteringBoundLogger
) -> None:
    """Deliver one box (see the module docstring), then drop it, unless stopped meanwhile."""
    task = box.task
    tlog = logger.bind(job_id=task.job_id, task_id=task.task_id)
    outcome = box.outcome()
    if outcome is None:
        tlog.info("outbox: the render was not finished; the task goes back to the queue")
        box.discard()
        return
    policy = RetryPolicy(give_up_after=None)

    def retried(fn: Callable[[], object], what: str) -> None:
        call_with_retry(fn, what, policy, stop, logger=tlog)

    try:
        saved = box.saved_frames()
        missing = [frame for frame in task.render_frames if frame not in saved]
        if outcome.ok and not missing:
            for frame, path in saved.items():
                if frame in task.render_frames:
                    retried(
                        partial(upload_rendered, client, task, frame, path), f"upload frame {frame}"
                    )
            frames = sorted(saved)
            retried(lambda: client.complete(task.task_id, frames, [RESTART_NOTE]), "complete")
            tlog.info("outbox: frames delivered and task completed", frames=len(frames))
        else:
            reason = outcome.error or f"Blender did not save frames {missing[:20]}"
            lines = [RESTART_NOTE, *outcome.log_tail]
            retried(lambda: client.fail(task.task_id, reason, lines), "fail")
            tlog.info("outbox: failure reported", reason=reason)
    except RetryAborted:
        return
    except FarmhandError as exc:
        if exc.status_code in (404, 409):
            tlog.info("outbox: the task is no longer this worker's; dropped", error=str(exc))
        elif exc.status_code == 401:
            tlog.warning("outbox: the manager no longer knows this worker; dropped")
        else:
            tlog.error("outbox: delivery refused; dropped", error=str(exc))
    box.discard()
