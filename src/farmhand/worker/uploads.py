"""Upload rendered frames in the background while Blender renders the next one.

Frames are queued as they are saved; one thread sends them in order. Network hiccups
and manager restarts are retried (the shared `RetryPolicy`); an answer that waiting
cannot fix (a 4xx such as "not a valid image" or "task is no longer yours") stops the
uploader and is reported by `wait()`, so the agent can fail or drop the task.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.client import RunnerClient
from farmhand.client.errors import FarmhandError, is_retryable, is_task_gone
from farmhand.client.retry import OutageLog, RetryAborted, RetryPolicy, call_with_retry
from farmhand.shared.schemas import OutputStored, TaskAssignment

log: FilteringBoundLogger = structlog.get_logger(__name__)

UploadFn = Callable[[int, Path], object]
"""Send one frame (number, file) to the manager."""

_STOP = object()

MAX_LOG_LINES_PER_CALL = 2000
"""Log lines per progress call, live or from the outbox (the manager takes 10,000)."""

TILE_FILES_NOT_KEPT = (
    "File Output node files of a tile are not kept: a tiled still keeps its merged image only"
)
"""The task log's line for a tile whose scene has File Output nodes (`upload_frame`)."""


@dataclass(frozen=True)
class RenderedFrame:
    """A frame Blender saved and verified, with what goes with it: Blender's preview, the
    compositor's File Output node files (`(name stored under, file)`), and the seconds
    and peak memory it took. The live uploader and the outbox's delivery both send this,
    through `upload_frame`, so a frame delivered after a restart arrives as it would
    have live."""

    frame: int
    path: Path
    preview: Path | None = None
    passes: tuple[tuple[str, Path], ...] = ()
    seconds: float | None = None
    peak_memory_bytes: int | None = None


def upload_frame(
    client: RunnerClient,
    task: TaskAssignment,
    rendered: RenderedFrame,
    logger: FilteringBoundLogger,
) -> OutputStored:
    """Send a frame's File Output node files and Blender's preview of it, then the frame.

    The frame goes last: its arrival is what the web UI reacts to, and its thumbnail is
    made from the preview when there is one. Retried as a whole by callers: every upload
    replaces what it names. A preview the manager refuses is skipped (the frame stands
    without it); a refused File Output file fails the task like a refused frame.

    A tile sends its tile alone: its File Output files are pieces of passes that no merge
    puts together, and the manager refuses any file "for a frame" of a tile task, which
    owns no frames (the agent says so in the task's log, `TILE_FILES_NOT_KEPT`).
    """
    if task.tile is None:
        for name, extra in rendered.passes:
            client.upload_extra(task.job_id, task.task_id, rendered.frame, "pass", name, extra)
        if rendered.preview is not None:
            try:
                client.upload_extra(
                    task.job_id,
                    task.task_id,
                    rendered.frame,
                    "preview",
                    rendered.preview.name,
                    rendered.preview,
                )
            except FarmhandError as exc:
                if is_retryable(exc) or exc.status_code in (404, 409):
                    raise
                logger.warning("preview refused", frame=rendered.frame, error=str(exc))
    return upload_rendered(client, task, rendered.frame, rendered.path)


def upload_rendered(
    client: RunnerClient, task: TaskAssignment, frame: int, path: Path
) -> OutputStored:
    """What a render task made, where it belongs: a tile of a still goes to the tile
    upload (its merge makes the frame), anything else is the frame itself."""
    if task.tile is not None:
        return client.upload_tile(task.job_id, task.task_id, path)
    return client.upload_output(task.job_id, task.task_id, frame, path)


@dataclass
class UploadReport:
    """What the uploader achieved: frames stored, and the error that stopped it, if any."""

    uploaded: list[int] = field(default_factory=list)
    error: FarmhandError | None = None
    pending: int = 0


class FrameUploader:
    """A single background thread uploading frames in the order they were queued."""

    def __init__(
        self,
        upload: UploadFn,
        policy: RetryPolicy,
        *,
        logger: FilteringBoundLogger | None = None,
        on_uploaded: Callable[[int], None] | None = None,
        outage: OutageLog | None = None,
    ) -> None:
        self._upload = upload
        self._policy = policy
        self._log = logger or log
        self._outage = outage
        """The worker's: an outage is said once, by whichever of its calls sees it."""
        self._on_uploaded = on_uploaded
        self._queue: queue.Queue[tuple[int, Path] | object] = queue.Queue()
        self._abandon = threading.Event()
        self._lock = threading.Lock()
        self._report = UploadReport()
        self._thread = threading.Thread(target=self._run, name="frame-uploader", daemon=True)
        self._thread.start()

    def submit(self, frame: int, path: Path) -> None:
        """Queue a frame; returns at once so the render is never held up."""
        self._queue.put((frame, path))

    def close(self) -> None:
        """No more frames will come: the thread exits once the queue is sent."""
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread after `close()`/`abandon()`; True once it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> UploadReport:
        """`close()`, let every queued frame go out, then report."""
        self.close()
        self.join(timeout)
        return self.report()

    def report(self) -> UploadReport:
        with self._lock:
            return UploadReport(
                list(self._report.uploaded), self._report.error, self._queue.qsize()
            )

    def abandon(self) -> None:
        """Stop soon, dropping whatever is still queued (the task was taken away)."""
        self._abandon.set()
        self._queue.put(_STOP)

    @property
    def error(self) -> FarmhandError | None:
        with self._lock:
            return self._report.error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._abandon.is_set():
                return
            assert isinstance(item, tuple)
            frame, path = item
            if self.error is not None:
                continue  # already broken: drain without sending
            try:
                call_with_retry(
                    partial(self._upload, frame, path),
                    f"upload frame {frame}",
                    self._policy,
                    self._abandon,
                    logger=self._log,
                    outage=self._outage,
                )
            except RetryAborted:
                return
            except FarmhandError as exc:
                if is_task_gone(exc):  # a late worker told to stop: the farm at work
                    self._log.info(
                        "frame not taken: the task is no longer this worker's",
                        frame=frame,
                        error=str(exc),
                    )
                else:
                    self._log.error("upload failed", frame=frame, error=str(exc))
                with self._lock:
                    self._report.error = exc
                continue
            except OSError as exc:
                self._log.error("upload failed", frame=frame, error=str(exc))
                with self._lock:
                    self._report.error = FarmhandError(f"cannot read frame {frame}: {exc}")
                continue
            self._log.info("frame uploaded", frame=frame)
            with self._lock:
                self._report.uploaded.append(frame)
            if self._on_uploaded is not None:
                self._on_uploaded(frame)
