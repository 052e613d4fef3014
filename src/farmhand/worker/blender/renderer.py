"""The worker's real renderer: a task rendered by Blender through the driver.

With sessions on (the default) it holds at most one `BlenderSession`, for the job of the
last task: a task of the same job (same `RenderJob.session_key`: job, main file and file
hashes) is rendered in the Blender that already has the file open; a task of another job
closes it first, so a worker never holds two Blenders' memory.

A worker may offer several Blenders (`--blender 5.0=... --blender 3.4=...`): each task is
rendered by the newest one that can open its file and lies in the job's version range
(the manager only hands out tasks one of them fits).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.shared.blendfile import best_version, saved_version_of
from farmhand.shared.schemas import TaskAssignment
from farmhand.worker.agent import RenderJob, RenderOutcome
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import (
    Event,
    FrameSaved,
    FrameStarted,
    FrameStats,
    Opened,
    Progress,
)
from farmhand.worker.blender.orphans import PidFiles, default_pid_dir
from farmhand.worker.blender.process import (
    BlenderProcess,
    RenderRequest,
    RenderResult,
    render,
    start_failure,
)
from farmhand.worker.blender.session import DEFAULT_MAX_FRAMES, BlenderSession
from farmhand.worker.video import SceneLook, SceneUnavailable

log: FilteringBoundLogger = structlog.get_logger(__name__)


class BlenderTaskRenderer:
    """Renders tasks in Blender; keeps one session per job unless `sessions` is False.

    Made when the worker starts, before it takes any task, so that is when it kills the
    Blenders an earlier run of a worker left behind (`orphans.py`): a restarted worker
    must not render a task beside the Blender still rendering it from before the crash.
    Each Blender it starts is recorded in `pid_dir` (default: one per user, shared by
    the user's workers; a live worker's Blenders are never swept).
    """

    def __init__(
        self,
        install: BlenderInstall | list[BlenderInstall],
        *,
        sessions: bool = True,
        max_frames: int | None = DEFAULT_MAX_FRAMES,
        max_memory_mb: int | None = None,
        device: str | None = None,
        gpu: int | None = None,
        pid_dir: Path | None = None,
    ) -> None:
        self.pid_files = PidFiles(pid_dir or default_pid_dir())
        killed = self.pid_files.sweep()
        if killed:
            log.warning("killed Blenders left by an earlier run", pids=killed)
        self.installs = install if isinstance(install, list) else [install]
        self.install = self.installs[0]
        self.device = device
        self.gpu = gpu
        self.sessions = sessions
        self.max_frames = max_frames
        self.max_memory_mb = max_memory_mb
        self._lock = threading.Lock()
        self._session: BlenderSession | None = None
        self._key: str | None = None

    def __call__(self, job: RenderJob) -> RenderOutcome:
        task = job.task

        def on_event(event: Event) -> None:
            if isinstance(event, FrameStarted):
                job.on_frame_started(event.frame)
            elif isinstance(event, Progress):
                job.on_samples(event.sample, event.samples)
            elif isinstance(event, FrameStats):
                job.on_frame_stats(event.frame, event.seconds, event.peak_memory_bytes)
            elif isinstance(event, FrameSaved):
                extras = [(_relative(extra, job.output_dir), extra) for extra in event.extras]
                job.on_frame_files(event.frame, event.preview, extras)
            elif isinstance(event, Opened):
                job.on_scene(event.facts)

        install = self.install_for(job)
        if install is None:
            have = ", ".join(i.version for i in self.installs)
            saved = task.blender_saved or saved_version_of(job.blend_file)
            return RenderOutcome(
                ok=False,
                error=f"none of this worker's Blenders ({have}) can render this job "
                f"(saved by Blender {saved}, range {task.blender_version or 'any'})",
            )

        request = RenderRequest(
            blend_path=job.blend_file,
            frames=task.render_frames,
            output_dir=job.output_dir,
            output_format=task.output_format,
            resolution_percentage=task.resolution_percentage,
            samples=task.samples,
            threads=job.threads,
            device=self.device,
            gpu=self.gpu,
            stall_timeout=job.stall_timeout,
            path_remap=job.path_remap,
            tile=task.tile.model_dump() if task.tile is not None else None,
        )
        session = self._session_for(job, install)
        run: Callable[..., RenderResult] = (
            partial(render, install, pid_files=self.pid_files)
            if session is None
            else session.render
        )
        result = run(
            request,
            log_path=job.log_path,
            on_event=on_event,
            on_log=job.on_log,
            on_frame_ready=job.on_frame_saved,
            cancel=job.cancel,
        )
        return _outcome(result)

    def install_for(self, job: RenderJob) -> BlenderInstall | None:
        """The newest of this worker's Blenders that can render the task's job."""
        return self._install(job.task, job.blend_file)

    def _install(self, task: TaskAssignment, blend: Path) -> BlenderInstall | None:
        """The newest of this worker's Blenders that can open `blend` in the job's range.

        The manager names the Blender that saved the file; for a file it never read (a
        job on shared storage) the worker reads the header itself.
        """
        saved = task.blender_saved or saved_version_of(blend)
        version = best_version([i.version for i in self.installs], saved, task.blender_version)
        return next((i for i in self.installs if i.version == version), None)

    def scene_look(
        self,
        task: TaskAssignment,
        blend: Path,
        log_path: Path,
        on_log: Callable[[str], None],
        cancel: threading.Event,
    ) -> SceneLook:
        """The job's scene open in a fresh Blender, to show a video's EXR frames as the
        scene does (`display.BlenderSceneLook`): the Blender a render of the job would
        take. A session's Blender is closed first, so the worker still holds one Blender:
        a video comes after its job's renders, and a later render starts another."""
        from farmhand.worker.blender.display import BlenderSceneLook

        install = self._install(task, blend)
        if install is None:
            have = ", ".join(i.version for i in self.installs)
            raise SceneUnavailable(
                f"none of this worker's Blenders ({have}) can open it "
                f"(range {task.blender_version or 'any'})"
            )
        self.close()
        try:
            process = BlenderProcess(install, None, self.pid_files)
        except OSError as error:
            raise SceneUnavailable(start_failure(install, None, error).error) from error
        folder = log_path.parent / "display"
        try:
            return BlenderSceneLook.open(
                process, install.version, blend, folder, log_path, on_log, cancel
            )
        except OSError as error:  # the task's folder or log cannot be written
            process.close()
            raise SceneUnavailable(f"cannot prepare Blender's files: {error}") from error

    def _session_for(self, job: RenderJob, install: BlenderInstall) -> BlenderSession | None:
        """The session for this task's job (a new one if the job changed), or None."""
        if not self.sessions or job.session_key is None:
            return None
        key = f"{job.session_key}|{install.spec}"
        with self._lock:
            if self._session is not None and self._key == key:
                return self._session
            old, self._session = self._session, None
        if old is not None:
            log.info("another job: closing the Blender session", job_id=job.task.job_id)
            old.close()
        session = BlenderSession(
            install,
            threads=job.threads,
            max_frames=self.max_frames,
            max_memory_mb=self.max_memory_mb,
            pid_files=self.pid_files,
        )
        with self._lock:
            self._session, self._key = session, key
        return session

    def close(self) -> None:
        """End the session's Blender (the worker is stopping)."""
        with self._lock:
            session, self._session, self._key = self._session, None, None
        if session is not None:
            session.close()


def _relative(path: Path, root: Path) -> str:
    """`passes/00-File_Output/Image0001.png`: the name a File Output file is stored under."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _outcome(result: RenderResult) -> RenderOutcome:
    return RenderOutcome(
        ok=result.ok, error=result.error, log_tail=result.log_tail, causes=list(result.write_errors)
    )
