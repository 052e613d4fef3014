"""The worker's outbox: a task's results on disk until the manager has them.

While the manager is unreachable the agent keeps rendering; its frames, log lines and
the render's outcome must not live only in memory, or a worker that is killed (or loses
power) before the manager is back loses finished work that nobody will redo until a
heartbeat timeout, and then redoes it from scratch.

Each task the worker runs has a box, `<work_dir>/outbox/task-<id>/`:

- `task.json`     the assignment (what to report about, to whom);
- `frames/`       the render's output directory: frames, and under it Blender's previews
                  (`previews/`) and the File Output nodes' files (`passes/`);
- `saved.txt`     one line per frame once its file is verified: `frame<TAB>file name`,
                  then `<TAB>` and a JSON object of what goes with it (preview, passes,
                  seconds, peak memory; paths relative to `frames/`). A box written by
                  a worker before these details has the first two fields only: its
                  frames are delivered without them;
- `log.txt`       the task's log lines as they come;
- `log_sent.txt`  how many of those lines the manager has (kept by the agent after each
                  progress call), so a delivery sends the rest and nothing twice;
- `uploaded.txt`  one line per frame the manager confirmed it stored while the task ran
                  live, so a delivery does not send it again (a line lost in a crash
                  costs one upload more, never a frame);
- `scene.json`    the scene's frame rate once Blender has told it, for the job's video:
                  a render whose every progress call failed still reports it;
- `outcome.json`  written (atomically) once the render is over: ok or not, the error,
                  the log tail.

The agent deletes the box once the outcome is reported (or the task is known to be
gone), and also when the box cannot be written (a full disk): then the task is given back
as a fault of this machine (`agent.local_fault` on the box's `fault`), or fails with that
reason if the error is not the machine's, and the space is the next task's. A box found
at start-up is what a previous run of this worker could not deliver:

- with an outcome: it is delivered as the live task would have delivered it (`deliver`:
  every frame the manager does not have yet with its passes and preview through
  `uploads.upload_frame`, the log lines the manager lacks, the frames' time and memory
  and the scene's frame rate in progress calls, then the outcome),
  if the manager still counts the task as this worker's (anything else answers 404/409
  and the box is dropped) — a restart does not render a finished task again;
- without one (killed mid-render): the task is given back (`release`, not counted as a
  failed attempt) and the box dropped; another attempt renders it whole. Half a task is
  not resumed: a task's frames are rendered by one attempt.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.client import FarmhandError, RunnerClient
from farmhand.client.retry import RetryAborted, RetryPolicy, call_with_retry
from farmhand.shared.schemas import TaskAssignment, TaskProgress
from farmhand.worker.uploads import MAX_LOG_LINES_PER_CALL, RenderedFrame, upload_frame

log: FilteringBoundLogger = structlog.get_logger(__name__)
_T = TypeVar("_T")

RESTART_NOTE = "[farmhand worker] restarted; delivered this task's results from its outbox"
OLD_BOX_NOTE = (
    "[farmhand worker] restarted; this task's outbox was written by an older worker, which "
    "did not note which log lines the manager had: lines below may repeat earlier ones"
)
UNFINISHED_REASON = "the worker was restarted before the render finished"

MAX_LOG_BYTES = 4 * 1024 * 1024
"""A box's log file stops growing here (the full log is in the worker's own log too)."""


class OutboxError(Exception):
    """A box cannot be written (the worker's disk is full): the task cannot be kept."""


def cannot_write(what: str, path: Path, exc: OSError) -> str:
    """Why a task fails when its box cannot be written: what, where, and, for the usual
    cause, that the worker's disk is full (not the bare `[Errno 28]`, which names
    neither the worker nor the file)."""
    where = f"{path} (in the worker's work dir)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the worker's disk is full: cannot write {what} to {where}: {exc.strerror}"
    return f"the worker cannot write {what} to {where}: {exc}"


@dataclass(frozen=True)
class Outcome:
    """How the render ended, as the agent decided (frames checked, errors read)."""

    ok: bool
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)


def _write_atomically(path: Path, text: str, *, durable: bool = True) -> None:
    """Write, fsync, rename: a reader sees the old file or the whole new one."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        if durable:
            os.fsync(out.fileno())
    temporary.replace(path)


def _relative(path: Path, root: Path) -> str:
    """`path` as stored in `saved.txt`: relative to the box's `frames/` when inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


class TaskBox:
    """One task's results on disk. Methods may be called from any of the agent's threads.

    A write that fails (a full disk) does not raise into the render's callbacks: the box
    notes it (`broken`), and `finish` turns a box that missed a frame or its outcome into
    a failed task with that reason, which the agent reports.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.frames_dir = root / "frames"
        self._lock = threading.Lock()
        self.broken: str | None = None
        """Why this box cannot be trusted to hold the task (a frame or the outcome was
        not written); None while it is whole."""
        self.fault: OSError | None = None
        """The write that broke the box, with its errno and path: the agent asks it
        whether the machine's disk is at fault (the task goes back) or not."""
        self._log_broken = False

    @property
    def task(self) -> TaskAssignment:
        return TaskAssignment.model_validate_json((self.root / "task.json").read_text("utf-8"))

    def frame_saved(self, frame: int, path: Path) -> None:
        """The frame's file is written and verified; nothing else is known of it."""
        self.keep(RenderedFrame(frame, path))

    def keep(self, rendered: RenderedFrame) -> None:
        """Note a verified frame and what goes with it, before it is handed on for upload."""
        details: dict[str, Any] = {
            "preview": None
            if rendered.preview is None
            else _relative(rendered.preview, self.frames_dir),
            "passes": [[name, _relative(p, self.frames_dir)] for name, p in rendered.passes],
            "seconds": rendered.seconds,
            "peak_memory_bytes": rendered.peak_memory_bytes,
        }
        line = f"{rendered.frame}\t{rendered.path.name}\t{json.dumps(details)}\n"
        path = self.root / "saved.txt"
        with self._lock:
            try:
                with path.open("a", encoding="utf-8") as out:
                    out.write(line)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                what = f"the record of frame {rendered.frame}"
                self._break(cannot_write(what, path, exc), path, exc)

    def _break(self, reason: str, path: Path, exc: OSError) -> None:
        """Note the first write that failed; the error names the file it was about (a
        failed flush names none)."""
        if self.broken is None:
            self.broken = reason
            self.fault = OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(path))
            log.error("outbox: cannot keep the task", reason=reason)

    def logging(self, then: Callable[[str], None]) -> Callable[[str], None]:
        """An `on_log` that keeps the line here first, then calls `then` (progress)."""

        def call(line: str) -> None:
            self.log_line(line)
            then(line)

        return call

    def log_line(self, line: str) -> None:
        """Keep a log line; one that cannot be written (a full disk) is not kept, nor any
        after it: the line still goes to the manager live, and a log with a gap would
        send the wrong lines after a restart."""
        with self._lock:
            path = self.root / "log.txt"
            if self._log_broken:
                return
            try:
                if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
                    return
                with path.open("a", encoding="utf-8") as out:
                    out.write(line.rstrip("\n") + "\n")
            except OSError as exc:
                self._log_broken = True
                log.warning("outbox: log lines no longer kept", error=str(exc), path=str(path))

    def log_sent(self, count: int) -> None:
        """The manager has the first `count` lines of the task's log (or they were dropped
        on the way for good). Best effort: an old count costs repeated lines, not lost ones."""
        with self._lock:
            try:
                _write_atomically(self.root / "log_sent.txt", str(count), durable=False)
            except OSError as exc:
                log.warning("outbox: cannot note the log lines sent", error=str(exc))

    def uploaded(self, frame: int) -> None:
        """The manager confirmed it stored `frame` (and what went with it). Best effort,
        not synced: a line lost in a crash only means the frame is sent again."""
        with self._lock:
            try:
                with (self.root / "uploaded.txt").open("a", encoding="utf-8") as out:
                    out.write(f"{frame}\n")
            except OSError as exc:
                log.warning("outbox: cannot note an uploaded frame", frame=frame, error=str(exc))

    def uploaded_frames(self) -> set[int]:
        """Frames the manager already has from the live task."""
        try:
            lines = (self.root / "uploaded.txt").read_text("utf-8").split()
        except OSError:
            return set()
        return {int(line) for line in lines if line.lstrip("-").isdigit()}

    def scene_fps(self, fps: float | None = None) -> float | None:
        """Keep the scene's frame rate (given `fps`), or read what was kept (None if
        Blender never told it, or a box of an older worker)."""
        path = self.root / "scene.json"
        with self._lock:
            if fps is not None:
                try:
                    _write_atomically(path, json.dumps({"fps": fps}), durable=False)
                except OSError as exc:
                    log.warning("outbox: cannot keep the scene's frame rate", error=str(exc))
                return fps
            try:
                kept = json.loads(path.read_text("utf-8")).get("fps")
            except (OSError, ValueError, AttributeError):
                return None
        return float(kept) if isinstance(kept, int | float) and kept > 0 else None

    def unsent_log_lines(self) -> tuple[int, list[str]] | None:
        """(how many lines the manager has, the lines after them), or None for a box of a
        worker that did not count them (every line is then unsent, some perhaps not)."""
        lines = self.log_tail(None)
        try:
            sent = int((self.root / "log_sent.txt").read_text("utf-8").strip() or "0")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            sent = 0
        return sent, lines[sent:]

    def finish(self, outcome: Outcome) -> None:
        """The render is over; from now on a restart delivers instead of dropping.

        A box that missed a frame's record reports the failure it met instead of the
        render's outcome (a delivery would find the frame missing and blame Blender); an
        outcome that cannot be written leaves the box `broken` (without one, a restart
        gives the task back instead of delivering a task whose outcome nobody knows).
        """
        if self.broken is not None:
            error = self.broken if outcome.ok else f"{self.broken} (and {outcome.error})"
            outcome = Outcome(False, error, outcome.log_tail)
        data = {"ok": outcome.ok, "error": outcome.error, "log_tail": outcome.log_tail}
        path = self.root / "outcome.json"
        with self._lock:
            try:
                _write_atomically(path, json.dumps(data))
            except OSError as exc:
                self._break(cannot_write("the task's outcome", path, exc), path, exc)

    def outcome(self) -> Outcome | None:
        try:
            data = json.loads((self.root / "outcome.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return Outcome(bool(data["ok"]), data.get("error"), list(data.get("log_tail") or []))

    def saved_frames(self) -> dict[int, Path]:
        """Frames whose file was verified, by number, with the file (if it is still there)."""
        return {frame: rendered.path for frame, rendered in self.rendered_frames().items()}

    def rendered_frames(self) -> dict[int, RenderedFrame]:
        """Frames whose file was verified and is still here, by number, with what goes with
        them (nothing for a line of an older worker's box)."""
        try:
            lines = (self.root / "saved.txt").read_text("utf-8").splitlines()
        except OSError:
            return {}
        found: dict[int, RenderedFrame] = {}
        for line in lines:
            number, _, rest = line.partition("\t")
            name, _, details = rest.partition("\t")
            path = self.frames_dir / Path(name).name
            if not (number.lstrip("-").isdigit() and name and path.is_file()):
                continue
            found[int(number)] = self._rendered(int(number), path, details)
        return dict(sorted(found.items()))

    def _rendered(self, frame: int, path: Path, details: str) -> RenderedFrame:
        try:
            data = json.loads(details) if details else {}
        except ValueError:
            data = {}  # a line cut short by a crash: the frame itself was verified
        if not isinstance(data, dict):
            data = {}
        preview = data.get("preview")
        seconds, peak = data.get("seconds"), data.get("peak_memory_bytes")
        return RenderedFrame(
            frame,
            path,
            preview=self.frames_dir / preview if isinstance(preview, str) else None,
            passes=tuple(
                (str(name), self.frames_dir / str(file)) for name, file in data.get("passes") or []
            ),
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
            peak_memory_bytes=int(peak) if isinstance(peak, int) else None,
        )

    def log_tail(self, lines: int | None) -> list[str]:
        """The last `lines` lines of the task's log (None: all of them)."""
        try:
            text = (self.root / "log.txt").read_text("utf-8", errors="replace")
        except OSError:
            return []
        every = text.splitlines()
        return every if lines is None else every[-lines:]

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Outbox:
    """The boxes of one worker, under `<work_dir>/outbox`."""

    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / "outbox"

    def open(self, task: TaskAssignment) -> TaskBox:
        """A fresh, empty box for a task just claimed (an older one of it is replaced).

        Raises OutboxError, with nothing left behind, if it cannot be written.
        """
        box = TaskBox(self.root / f"task-{task.task_id}")
        box.discard()
        path = box.root / "task.json"
        try:
            box.frames_dir.mkdir(parents=True)
            _write_atomically(path, task.model_dump_json())
            _write_atomically(box.root / "log_sent.txt", "0")
        except OSError as exc:
            box.discard()
            raise OutboxError(cannot_write("the task's outbox", path, exc)) from exc
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
    policy = RetryPolicy(give_up_after=None)

    def retried(fn: Callable[[], _T], what: str) -> _T:
        return call_with_retry(fn, what, policy, stop, logger=tlog)

    try:
        if outcome is None:
            # Ask rather than assume: the manager may have given the task to another
            # worker meanwhile (or finished it), and its answer says so (a 409).
            answer = retried(lambda: client.release(task.task_id, UNFINISHED_REASON), "release")
            tlog.info(
                "outbox: the render was not finished; the task was given back",
                task_status=answer.task_status.value,
            )
        else:
            _deliver_outcome(box, task, outcome, client, retried, tlog)
    except RetryAborted:
        return
    except FarmhandError as exc:
        if exc.status_code in (404, 409):
            tlog.info(
                "outbox: the manager answered that the task is no longer this worker's; dropped",
                answer=str(exc),
            )
        elif exc.status_code == 401:
            tlog.warning("outbox: the manager no longer knows this worker; dropped")
        else:
            tlog.error("outbox: delivery refused; dropped", error=str(exc))
    box.discard()


def _deliver_outcome(
    box: TaskBox,
    task: TaskAssignment,
    outcome: Outcome,
    client: RunnerClient,
    retried: Callable[[Callable[[], Any], str], Any],
    tlog: FilteringBoundLogger,
) -> None:
    """Send a finished box as the live task would have: each frame with its passes and
    preview (`upload_frame`, the live path's own), the log lines and figures the manager
    lacks (`_send_log`), then complete or fail. A 404/409/401 is raised to `deliver`."""
    rendered = box.rendered_frames()
    already = box.uploaded_frames()
    uploaded: list[int] = []
    upload_error: str | None = None
    for frame, saved in rendered.items():
        if frame not in task.render_frames:
            continue
        if frame in already:  # the manager confirmed it while the task ran live
            uploaded.append(frame)
            continue
        try:
            retried(partial(upload_frame, client, task, saved, tlog), f"upload frame {frame}")
        except FarmhandError as exc:
            if exc.status_code in (401, 404, 409):
                raise
            upload_error = str(exc)
            break
        except OSError as exc:
            upload_error = f"cannot read frame {frame}: {exc}"
            break
        uploaded.append(frame)
    sent = _send_log(box, task, rendered, len(uploaded), client, retried, tlog)
    missing = [frame for frame in task.render_frames if frame not in uploaded]
    if outcome.ok and upload_error is None and not missing:
        retried(lambda: client.complete(task.task_id, uploaded, [RESTART_NOTE]), "complete")
        tlog.info("outbox: frames delivered and task completed", frames=len(uploaded))
        return
    if not outcome.ok:
        reason = outcome.error or "render failed"
    elif upload_error is not None:
        reason = f"uploading a frame failed: {upload_error}"
    else:
        reason = f"Blender did not save frames {missing[:20]}"
    lines = [RESTART_NOTE] if sent else [RESTART_NOTE, *outcome.log_tail]
    retried(lambda: client.fail(task.task_id, reason, lines), "fail")
    tlog.info("outbox: failure reported", reason=reason, frames=len(uploaded))


def _send_log(
    box: TaskBox,
    task: TaskAssignment,
    rendered: dict[int, RenderedFrame],
    frames_done: int,
    client: RunnerClient,
    retried: Callable[[Callable[[], Any], str], Any],
    tlog: FilteringBoundLogger,
) -> bool:
    """Progress calls as the live task makes them: the log lines the manager lacks, the
    frames' Blender seconds and peak memory, the scene's frame rate (the manager keeps the
    first it is told, so telling it again is harmless). True when every line got through."""
    scene_fps = box.scene_fps()
    seconds = [r.seconds for r in rendered.values() if r.seconds is not None]
    peaks = [r.peak_memory_bytes for r in rendered.values() if r.peak_memory_bytes]
    unsent = box.unsent_log_lines()
    if unsent is None:  # an older worker's box: it did not note what was sent
        sent, lines = 0, [OLD_BOX_NOTE, *box.log_tail(None)]
    else:
        sent, lines = unsent
    first = True
    while first or lines:
        chunk, lines = lines[:MAX_LOG_LINES_PER_CALL], lines[MAX_LOG_LINES_PER_CALL:]
        progress = TaskProgress(
            frames_done=frames_done,
            render_seconds=round(sum(seconds), 3) if seconds else None,
            peak_memory_bytes=max(peaks) if peaks else None,
            scene_fps=scene_fps if first else None,
            log_lines=chunk,
        )
        try:
            retried(partial(client.progress, task.task_id, progress), "progress")
        except FarmhandError as exc:
            if exc.status_code in (401, 404, 409):
                raise
            tlog.warning("outbox: log lines not sent", error=str(exc))
            return False
        sent += len(chunk)
        if unsent is not None:
            box.log_sent(sent)
        first = False
    return True
