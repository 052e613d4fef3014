"""A persistent Blender session: one Blender, one job's .blend open, many requests.

Starting Blender, importing it and opening the file costs seconds; a light frame costs a
fraction of one. A worker rendering many chunks of one job therefore keeps one Blender
alive and sends it request after request (the driver restores the file's settings after
each render, so one task's overrides never leak into the next).

Honesty is the one-shot render's: each request goes through the same
`BlenderProcess.run` and is judged the same way. A session never carries a problem into
the next task: after a cancel or any failure it is closed, and the next request starts a
fresh Blender. It is also recycled (closed before the next request) after `max_frames`
frames or once the process group's resident memory passes `max_memory_mb`, to bound what
a long job can leak, and restarted if Blender died between requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameStarted
from farmhand.worker.blender.orphans import PidFiles
from farmhand.worker.blender.process import (
    BlenderProcess,
    RenderRequest,
    RenderResult,
    describe_exit,
    start_failure,
)

DEFAULT_MAX_FRAMES = 500
MB = 1024 * 1024


@dataclass
class _Attempt:
    result: RenderResult
    retry_fresh: bool = False
    note: str | None = None


class BlenderSession:
    """Renders requests in one long-lived Blender, starting a fresh one when needed.

    One request at a time (the worker renders one task at a time); `close()` may be
    called from another thread to end it.
    """

    def __init__(
        self,
        install: BlenderInstall,
        *,
        threads: int | None = None,
        max_frames: int | None = DEFAULT_MAX_FRAMES,
        max_memory_mb: int | None = None,
        pid_files: PidFiles | None = None,
    ) -> None:
        self.install = install
        self.pid_files = pid_files
        self.threads = threads
        self.max_frames = max_frames
        self.max_memory_mb = max_memory_mb
        self.starts = 0
        """How many Blenders this session has started (1 for a job served by one)."""
        self._process: BlenderProcess | None = None

    @property
    def pid(self) -> int | None:
        """The running Blender's pid, or None between Blenders."""
        process = self._process
        return process.pid if process is not None else None

    def render(
        self,
        request: RenderRequest,
        *,
        log_path: Path,
        on_event: Callable[[Event], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_frame_ready: Callable[[int, Path], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RenderResult:
        """Render `request` in the session's Blender (started or restarted as needed).

        Same contract as `process.render`, except that Blender stays up afterwards when
        the request succeeded.
        """
        result = self._render_once(request, log_path, on_event, on_log, on_frame_ready, cancel)
        if result.retry_fresh:
            # The reused Blender died before it answered anything of this request (it
            # crashed between tasks, and the check before reuse raced its exit): the
            # request never ran, so it runs once more in a fresh Blender.
            result = self._render_once(
                request, log_path, on_event, on_log, on_frame_ready, cancel, result.note
            )
        return result.result

    def _render_once(
        self,
        request: RenderRequest,
        log_path: Path,
        on_event: Callable[[Event], None] | None,
        on_log: Callable[[str], None] | None,
        on_frame_ready: Callable[[int, Path], None] | None,
        cancel: threading.Event | None,
        why_fresh: str | None = None,
    ) -> _Attempt:
        notes: list[str] = [why_fresh] if why_fresh else []
        process = self._process
        if process is not None:
            reason = self._recycle_reason(process, request)
            if reason is not None:
                notes.append(f"farmhand: {reason}; starting a fresh Blender")
                self.close()
                process = None
        if process is None:
            try:
                process = BlenderProcess(self.install, request.threads, self.pid_files)
            except OSError as exc:
                return _Attempt(start_failure(self.install, request.threads, exc))
            self._process = process
            self.starts += 1
            notes.append(f"farmhand: started Blender (pid {process.pid}) for this session")
            reused = False
        else:
            reused = True
            notes.append(
                f"farmhand: reusing the session's Blender (pid {process.pid}, "
                f"{process.frames_rendered} frames rendered so far)"
            )
        started: list[int] = []

        def watch(event: Event) -> None:
            if isinstance(event, FrameStarted):
                started.append(event.frame)
            if on_event is not None:
                on_event(event)

        result = process.run(
            request,
            log_path=log_path,
            on_event=watch,
            on_log=on_log,
            on_frame_ready=on_frame_ready,
            cancel=cancel,
            notes=notes,
        )
        alive = process.alive
        if not result.ok or not alive:
            # A Blender that failed (or was canceled) may be in any state: the next
            # request must not inherit it.
            self.close()
        never_ran = not started and not result.timed_out and not (cancel and cancel.is_set())
        if reused and not alive and never_ran:
            code = result.exit_code if result.exit_code is not None else 0
            why = (
                f"farmhand: the session's Blender ended before this task started "
                f"({describe_exit(code)}); starting a fresh Blender"
            )
            return _Attempt(result, retry_fresh=True, note=why)
        return _Attempt(result)

    def _recycle_reason(self, process: BlenderProcess, request: RenderRequest) -> str | None:
        """Why the running Blender must not take `request`, or None if it may."""
        code = process.process.poll()
        if code is not None:
            return f"the session's Blender ended between tasks ({describe_exit(code)})"
        if request.threads != process.threads:
            return "the render thread count changed"
        if self.max_frames is not None and process.frames_rendered >= self.max_frames:
            return (
                f"the session's Blender rendered {process.frames_rendered} frames "
                f"(recycled after {self.max_frames})"
            )
        if self.max_memory_mb is not None:
            rss = process.rss_bytes()
            if rss > self.max_memory_mb * MB:
                return (
                    f"the session's Blender uses {rss // MB} MB "
                    f"(recycled above {self.max_memory_mb} MB)"
                )
        return None

    def close(self, grace: float = 3.0) -> None:
        """Quit Blender (killed if it has not quit within `grace`); the next request starts
        a fresh one."""
        process, self._process = self._process, None
        if process is not None:
            process.close(grace)

    def __enter__(self) -> BlenderSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
