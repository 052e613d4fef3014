"""The worker agent: pull tasks from the manager, render them, send the frames back.

The worker only dials out (it works behind NAT). Its loop is: load or register its
identity, heartbeat in the background, long-poll for a task, build the job's files from
the local cache, render with a cancel event, upload each frame as soon as it is saved,
stream progress and log lines, then complete or fail the task.

Two promises shape the code:
- a manager restart must not lose a job: every call is retried with backoff while the
  manager is unreachable, and the render goes on meanwhile;
- SIGTERM/SIGINT stops within seconds: the render is canceled, the task released (not
  counted as a failed attempt) and the runner signed off.

The renderer is injected (`TaskRenderer`), so the agent is tested without Blender; the
real one wraps `farmhand.worker.blender` (see `blender_renderer`). Each task carries a
`session_key` naming its job's files: a renderer may keep Blender running with the file
open for the next task of the same key (a persistent session), and the agent asks the
manager for more of that job (`prefer_job`) so the session is used.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx
import structlog
from structlog.typing import FilteringBoundLogger

from farmhand import __version__
from farmhand.client import FarmhandError, RunnerClient
from farmhand.client.errors import is_retryable, is_task_gone
from farmhand.client.retry import OutageLog, RetryAborted, RetryPolicy, call_with_retry
from farmhand.shared.pathmap import PathMapError, current_platform, remap_pairs, to_local
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import (
    CompletionOutcome,
    FrameFile,
    TaskAssignment,
    TaskFile,
    TaskOutcome,
    TaskProgress,
    TileFile,
    WorkerCapabilities,
)
from farmhand.worker import hardware
from farmhand.worker.cache import (
    BlobCache,
    CacheError,
    materialise,
    prune_job_dirs,
    prune_task_logs,
)
from farmhand.worker.ffmpeg import FfmpegInstall, find_ffmpeg
from farmhand.worker.identity import (
    Identity,
    check_work_dir,
    forget_identity,
    holding_work_dir,
    load_identity,
    save_identity,
)
from farmhand.worker.layout import SharedOutputs, SharedStorageError, path_table, shared_blend
from farmhand.worker.merge import MergeCanceled, MergeError, MergeWork, merge, merged_suffix
from farmhand.worker.outbox import Outbox, OutboxError, Outcome, TaskBox, deliver_pending
from farmhand.worker.uploads import (
    MAX_LOG_LINES_PER_CALL,
    TILE_FILES_NOT_KEPT,
    FrameUploader,
    RenderedFrame,
    upload_frame,
)
from farmhand.worker.video import SceneLook, SceneLooks, SceneUnavailable, VideoWork, make_video

log: FilteringBoundLogger = structlog.get_logger(__name__)
_T = TypeVar("_T")

CLAIM_RETRY_MAX = 10.0
"""Most seconds between two claims while the manager does not answer (from 0.5, doubling)."""
MAX_PENDING_LOG_LINES = 20_000
LOG_TAIL_LINES = 50


# --------------------------------------------------------------------- settings


@dataclass
class WorkerSettings:
    """Everything the agent needs, passed in (never read from globals or the env)."""

    manager_url: str
    registration_token: str
    name: str
    work_dir: Path
    blender: str | None = None
    threads: int | None = None
    heartbeat_interval: float = 5.0
    poll_wait: float = 20.0
    verify: bool | str = True
    progress_interval: float = 0.75
    retry_for: float | None = None
    """How long task calls (complete, fail, uploads) are retried while the manager is away;
    None: until it is back. Frames wait on disk meanwhile, and a restarted manager gives
    workers a full heartbeat timeout to report, so a long outage loses no finished work."""
    shutdown_grace: float = 5.0
    """How long shutdown may spend on releasing the task and signing off."""
    tags: list[str] = field(default_factory=list)
    """Offered to jobs that require tags (`gpu`, `highmem`, `studio-b`…)."""
    sessions: bool = True
    """Keep Blender running with the job's file open between tasks of the same job."""
    session_frames: int | None = 500
    """Start a fresh Blender after this many frames in one session (None: never)."""
    session_memory_mb: int | None = None
    """Start a fresh Blender once the session's resident memory passes this (None: never)."""
    blenders: list[str] = field(default_factory=list)
    """Several Blenders (`5.0=/opt/blender-5.0/blender`, a path, `bpy`); empty: `blender`."""
    device: str = "CPU"
    """Cycles device kind to render on; checked with Blender at start."""
    gpu: int | None = None
    """Render on this GPU of `device` only (one worker per GPU)."""
    task_timeout: float | None = None
    """Kill Blender after this many seconds without progress; None: the manager's timeout."""
    ffmpeg: str | None = None
    """ffmpeg for `video` tasks (None: `FARMHAND_FFMPEG`, then PATH; none found: no videos)."""
    cache_size: int | None = None
    """Bytes the blob cache may hold (least recently used blobs go first); None: no limit."""
    platform: str = field(default_factory=current_platform)
    """Which root of each shared-storage variable is this machine's (`--platform`)."""
    path_map: dict[str, dict[str, str]] = field(default_factory=dict)
    """Shared-storage roots of this worker (`--path-map`), over the manager's."""
    register_again: bool = False
    """Throw the stored identity away and register anew (`--register-again`): the one way
    back for a runner an admin deleted, which otherwise refuses to start."""


# ----------------------------------------------------------- renderer contract


def _ignore(*_: object) -> None:
    return None


@dataclass
class RenderJob:
    """One task to render. Callbacks may come from any thread and must return quickly."""

    task: TaskAssignment
    blend_file: Path
    output_dir: Path
    log_path: Path
    threads: int | None
    cancel: threading.Event
    on_frame_started: Callable[[int], None] = _ignore
    on_frame_saved: Callable[[int, Path], None] = _ignore
    """Called once a frame's file is written and verified as a readable image."""
    on_samples: Callable[[int, int], None] = _ignore
    on_log: Callable[[str], None] = _ignore
    on_frame_stats: Callable[[int, float, int], None] = _ignore
    """(frame, Blender seconds, peak resident bytes) once a frame is saved."""
    on_frame_files: Callable[[int, Path | None, list[tuple[str, Path]]], None] = _ignore
    """(frame, Blender's JPEG preview, [(name, path)] of File Output node files), called
    before `on_frame_saved`: they are uploaded with the frame."""
    on_scene: Callable[[dict[str, Any]], None] = _ignore
    """The scene's facts (`driver.scene_facts`) when Blender opens the file; not called
    for a task that reuses a Blender session with the file already open."""
    stall_timeout: float | None = None
    """Seconds without a word from Blender after which it is killed as hung."""
    path_remap: list[tuple[str, str]] = field(default_factory=list)
    """(other platform's root, this one's): absolute paths inside the .blend starting with
    the first are rewritten to the second when it is opened (shared storage)."""
    session_key: str | None = None
    """Equal for tasks of one job with the same files: they may share one running Blender.
    None: render in a fresh one."""


@dataclass
class RenderOutcome:
    """Did it work; if not, why (one readable line); the last lines of the log."""

    ok: bool
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    causes: list[BaseException] = field(default_factory=list)
    """What the render met on this machine's files, failed or not: an OSError with errno
    and path for a frame Blender could not save or the task's log the worker could not
    write (`process.RenderResult.write_errors`), or the exception of a renderer that
    crashed. One that is this machine's own fault (`local_fault`: its work dir full or
    read-only) gives the task back instead of failing it: any worker would have met it
    here, none would elsewhere."""


class TaskRenderer(Protocol):
    """Renders a task, blocking until done or until `job.cancel` is set."""

    def __call__(self, job: RenderJob, /) -> RenderOutcome: ...


@runtime_checkable
class ClosableRenderer(Protocol):
    """A renderer that holds something between tasks (a Blender session) to end at stop."""

    def __call__(self, job: RenderJob, /) -> RenderOutcome: ...

    def close(self) -> None: ...


def session_key(task: TaskAssignment) -> str:
    """What a Blender session holds: the job's main file and the exact files it loaded.

    Two tasks with the same key render the same bytes, so the second may reuse the
    Blender the first left running; new file contents make a new key.
    """
    manifest = "\n".join(f"{f.path}\0{f.sha256}" for f in sorted(task.files, key=lambda f: f.path))
    digest = hashlib.sha256(f"{task.main_file}\n{manifest}".encode()).hexdigest()[:16]
    return f"job-{task.job_id}-{digest}"


# ----------------------------------------------------------------- task state


class _TaskRun:
    """What the agent, the heartbeat and the progress reporter share about one task."""

    def __init__(self, task: TaskAssignment) -> None:
        self.task = task
        self.cancel = threading.Event()
        self.finished = threading.Event()
        self.sending = threading.Lock()
        """Held for a progress call from taking its lines to its answer. The reporter runs
        until the outcome is reported, so without it the outcome could overtake a call
        already carrying lines, and the manager refuses lines for a task that ended: the
        log would lose them (a short video task's whole log went so)."""
        self._lock = threading.Lock()
        self.ending = False
        """The outcome (complete, fail, give-back) is on its way: a heartbeat answered
        meanwhile names the task among those to abort because the manager has it already,
        which is no abort (`_heartbeat_loop`)."""
        self.dropped_reason: str | None = None
        self.frames_uploaded = 0
        self.frame: int | None = None
        self.sample: int | None = None
        self.samples_total: int | None = None
        self.render_seconds = 0.0
        self.peak_memory_bytes: int | None = None
        self.files: dict[int, tuple[Path | None, list[tuple[str, Path]]]] = {}
        """Per frame: Blender's preview and the File Output nodes' files, sent with it."""
        self.stats: dict[int, tuple[float, int]] = {}
        """Per frame: Blender seconds and peak resident bytes, kept with it in the outbox."""
        self.pending_logs: list[str] = []
        self._log_first = 0
        """Which line of the task's log `pending_logs[0]` is: every line before it was
        sent, or dropped as too many (`MAX_PENDING_LOG_LINES`)."""
        self.box: TaskBox | None = None
        """The task's outbox, told after each progress call how many lines were sent."""
        self.scene_fps: float | None = None
        """Not yet reported: the scene's frame rate, for the job's video."""
        self.dirty = True

    def drop(self, reason: str) -> None:
        """The manager took the task away: stop rendering, send nothing more about it."""
        with self._lock:
            if self.dropped_reason is None:
                self.dropped_reason = reason
        self.cancel.set()

    @property
    def dropped(self) -> bool:
        with self._lock:
            return self.dropped_reason is not None

    def frame_started(self, frame: int) -> None:
        with self._lock:
            self.frame, self.sample, self.dirty = frame, None, True

    def samples(self, sample: int, total: int) -> None:
        with self._lock:
            self.sample, self.samples_total, self.dirty = sample, total, True

    def frame_files(self, frame: int, preview: Path | None, extras: list[tuple[str, Path]]) -> None:
        with self._lock:
            self.files[frame] = (preview, extras)

    def rendered(self, frame: int, path: Path) -> RenderedFrame:
        """The frame just saved, with what the renderer said of it before."""
        with self._lock:
            preview, extras = self.files.get(frame, (None, []))
            seconds, peak = self.stats.get(frame, (None, None))
        return RenderedFrame(frame, path, preview, tuple(extras), seconds, peak or None)

    def frame_stats(self, frame: int, seconds: float, peak_bytes: int) -> None:
        with self._lock:
            self.stats[frame] = (seconds, peak_bytes)
            self.render_seconds += seconds
            if peak_bytes:
                self.peak_memory_bytes = max(self.peak_memory_bytes or 0, peak_bytes)
            self.dirty = True

    def scene(self, facts: dict[str, Any]) -> None:
        fps, base = facts.get("fps"), facts.get("fps_base") or 1.0
        if isinstance(fps, int | float) and isinstance(base, int | float) and fps > 0 < base:
            with self._lock:
                self.scene_fps = round(fps / base, 6)
                self.dirty = True
                box = self.box
            if box is not None:  # for a delivery after a restart, if no progress got through
                box.scene_fps(round(fps / base, 6))

    def uploaded(self, frame: int) -> None:
        with self._lock:
            self.frames_uploaded += 1
            self.dirty = True
            box = self.box
        if box is not None:  # a delivery after a restart does not send it again
            box.uploaded(frame)

    def log_line(self, line: str) -> None:
        with self._lock:
            self.pending_logs.append(line)
            if len(self.pending_logs) > MAX_PENDING_LOG_LINES:
                cut = len(self.pending_logs) - MAX_PENDING_LOG_LINES
                del self.pending_logs[:cut]
                self._log_first += cut
            self.dirty = True

    def take_progress(self) -> TaskProgress | None:
        """The progress to send now, or None if nothing changed; lines leave the buffer."""
        with self._lock:
            if not self.dirty:
                return None
            lines = self.pending_logs[:MAX_LOG_LINES_PER_CALL]
            del self.pending_logs[:MAX_LOG_LINES_PER_CALL]
            self._log_first += len(lines)
            self.dirty = bool(self.pending_logs)
            scene_fps, self.scene_fps = self.scene_fps, None  # once is enough
            return TaskProgress(
                frames_done=self.frames_uploaded,
                frame=self.frame,
                sample=self.sample,
                samples_total=self.samples_total,
                render_seconds=round(self.render_seconds, 3),
                peak_memory_bytes=self.peak_memory_bytes,
                scene_fps=scene_fps,
                log_lines=lines,
            )

    def give_back(self, progress: TaskProgress) -> None:
        """A progress call failed: keep its lines for the next one."""
        with self._lock:
            self.pending_logs[:0] = progress.log_lines
            self._log_first -= len(progress.log_lines)
            self.scene_fps = self.scene_fps or progress.scene_fps
            self.dirty = True

    def sent(self) -> None:
        """A progress call got through: the outbox learns how much of the log the manager
        has, so a delivery after a restart sends only the rest."""
        with self._lock:
            done, box = self._log_first, self.box
        if box is not None:
            box.log_sent(done)


def _both(
    first: Callable[[int, Path], None], then: Callable[[int, Path], None]
) -> Callable[[int, Path], None]:
    """A frame callback that does `first`, then `then` (write to the share, then upload)."""

    def call(frame: int, path: Path) -> None:
        first(frame, path)
        then(frame, path)

    return call


def _noting_tile_files(
    task: TaskAssignment,
    then: Callable[[int, Path | None, list[tuple[str, Path]]], None],
    on_log: Callable[[str], None],
) -> Callable[[int, Path | None, list[tuple[str, Path]]], None]:
    """An `on_frame_files` that, for a tile whose scene has File Output nodes, says once
    in the task's log that their files are not kept (`uploads.upload_frame` does not
    send them), so an artist missing them reads why rather than guesses."""
    noted = threading.Event()

    def call(frame: int, preview: Path | None, extras: list[tuple[str, Path]]) -> None:
        if task.tile is not None and extras and not noted.is_set():
            noted.set()
            on_log(TILE_FILES_NOT_KEPT)
        then(frame, preview, extras)

    return call


def _share_failure(shared_out: SharedOutputs | None) -> str | None:
    """Why the task fails if a frame did not reach the job's `output_dir`, else None: a
    frame missing on the share is not a finished task (render and merge tasks alike)."""
    if shared_out is None or not shared_out.errors:
        return None
    return f"cannot write to shared storage: {'; '.join(shared_out.errors[:3])}"


LOCAL_FAULT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)
"""What an OSError says when it is this machine that cannot work (its disk full, read-only
or not its user's, failing), not the job that is wrong."""

FAULT_PAUSE_FIRST = 30.0
FAULT_PAUSE_MAX = 600.0
"""How long a worker with a local fault takes no task: 30 s, doubling to 10 minutes."""


def _share_root(task: TaskAssignment, platform: str, own: dict[str, dict[str, str]]) -> Path | None:
    """This machine's root of the share the task's .blend is on, if it has one."""
    variable = task.main_file.split("/", 1)[0]
    try:
        return Path(to_local(variable, platform, path_table(task, own)))
    except PathMapError:
        return None


def _share_missing(root: Path) -> bool:
    """A share's root that is not there or holds nothing: the share is not mounted here
    (an empty mount point), which no job can cause."""
    try:
        return not any(root.iterdir())
    except OSError:
        return True


def local_fault(
    exc: BaseException,
    task: TaskAssignment,
    platform: str,
    own: dict[str, dict[str, str]],
    work_dir: Path | None = None,
) -> str | None:
    """Why `exc` is this machine's fault rather than the job's, or None.

    This machine's: an OSError of `LOCAL_FAULT_ERRNOS` anywhere in the chain about a file
    in its own `work_dir` (or naming no file: a write to one it has open), its work dir
    full or read-only; or, for a task on shared storage, a share whose root folder is
    missing or empty here (not mounted). A file missing under a mounted share, a bad path
    or wrong bytes are the job's: the task fails as it would on any worker. So is a share's
    file this worker may not read (EACCES): every worker would give such a task back, no
    attempt would ever count, and the job would wait for ever with no reason given.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if (
            isinstance(seen, OSError)
            and seen.errno in LOCAL_FAULT_ERRNOS
            and _in_work_dir(seen, work_dir)
        ):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, SharedStorageError) and task.storage == "shared":
        root = _share_root(task, platform, own)
        if root is not None and _share_missing(root):
            return f"the share's root {root} is missing or empty (not mounted?): {exc}"
    return None


def _in_work_dir(error: OSError, work_dir: Path | None) -> bool:
    """Whether `error` is about the worker's own files: it names one in `work_dir`, or
    names none (unknown `work_dir`: any)."""
    named = [name for name in (error.filename, error.filename2) if name is not None]
    if work_dir is None or not named:
        return True
    root = os.path.abspath(work_dir)
    return any(
        os.path.commonpath([root, os.path.abspath(os.fsdecode(name))]) == root
        for name in named
        if isinstance(name, str | bytes | os.PathLike)
    )


EXIT_DELETED = 3
"""The exit code of a worker whose runner an admin deleted: not 2 (a refusal worth a
look and a restart), so that a service manager can be told not to restart it."""


# ---------------------------------------------------------------------- agent


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def older_manager(
    manager_url: str, manager_version: str | None, refusal: FarmhandError
) -> str | None:
    """The one line a worker that an older manager refused says, or None if the refusal
    is not about that.

    A worker newer than its manager sends it what it does not know: an older manager's
    strict schema refuses the registration with a 400 about `capabilities` ("Extra
    inputs are not permitted"), which reads like a bug of the worker. That, or any
    refusal of what we sent by a manager reporting an older version than ours, says which
    side to upgrade. Other refusals (a registration token it does not know) are not
    about versions.
    """
    if refusal.status_code not in (400, 422):
        return None
    about_capabilities = "capabilities" in refusal.detail
    older = manager_version is not None and _version_key(manager_version) < _version_key(
        __version__
    )
    if not (about_capabilities or older):
        return None
    ours = f"{__version__}, worker protocol {WORKER_PROTOCOL}"
    if older:
        return (
            f"the manager at {manager_url} runs farmhand {manager_version}, older than this "
            f"worker ({ours}): upgrade the manager (or run a worker of {manager_version})"
        )
    theirs = f"farmhand {manager_version}" if manager_version else "farmhand"
    return (
        f"the manager at {manager_url} runs an older build of {theirs} than this worker "
        f"({ours}), and refused what it declares ({refusal}): upgrade the manager (or run "
        "a worker of its build)"
    )


class Agent:
    """One worker process: one task at a time."""

    def __init__(
        self,
        settings: WorkerSettings,
        renderer: TaskRenderer,
        client: RunnerClient,
        capabilities: WorkerCapabilities,
        stop: threading.Event | None = None,
        ffmpeg: FfmpegInstall | None = None,
    ) -> None:
        self.settings = settings
        self.ffmpeg = ffmpeg
        """Set only if `capabilities` offer `video` tasks."""
        self.renderer = renderer
        self.client = client
        self.capabilities = capabilities
        self.stop = stop or threading.Event()
        self.cache = BlobCache(settings.work_dir / "cache", settings.cache_size)
        self.log = log.bind(worker=settings.name)
        self._current: _TaskRun | None = None
        self._current_lock = threading.Lock()
        self.outbox = Outbox(settings.work_dir)
        self._held_job: int | None = None
        """The job of the last task: its files (and Blender session) are still here."""
        self._next_task: TaskAssignment | None = None
        """A task the manager handed out with the last completion (`complete?next=true`)."""
        self._late_claim: threading.Thread | None = None
        """Watches the long poll abandoned at a stop, to give back what it still brings."""
        self._late_released = threading.Event()
        """Set once `_late_claim` gave back a task the abandoned poll brought."""
        self._task_policy = RetryPolicy(give_up_after=settings.retry_for)
        self._outage = OutageLog()
        """The manager not answering: one outage, logged once, then every few minutes,
        and once when it answers again, whichever of the worker's calls see it (claim,
        heartbeat, register, and its task's progress, downloads, uploads and outcome,
        with the task's ids). Each task call had a log of its own: one outage was
        announced by the heartbeat and again by every call of the task (`_retried`)."""
        self._deleted: FarmhandError | None = None
        """The manager's answer saying an admin deleted this runner: the worker stops."""
        self._fault_pause = 0.0
        """Seconds the current local fault keeps this worker from claiming (0: none)."""
        self._paused = False
        """A task was given back for a local fault; the next claim waits `_fault_pause`."""

    # -- lifecycle

    def run(self) -> int:
        """Work until `stop` is set; 0 on a clean stop, 2 if the manager refuses us,
        `EXIT_DELETED` if an admin deleted this runner."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.cache.remove_partial_downloads()
        try:
            self._connect()
        except RetryAborted:
            return 0
        except FarmhandError as exc:
            if exc.runner_deleted:
                self._refused(exc)
                return self._locked_out()
            older = older_manager(self.settings.manager_url, self._manager_version(exc), exc)
            if older is not None:
                self.log.error(older)
                return 2
            self.log.error("cannot register with the manager", error=str(exc))
            return 2
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stop.is_set():
                if self._paused:
                    self._paused = False
                    self.stop.wait(self._fault_pause)
                    continue
                # The completion of the last task may have brought the next one.
                task, self._next_task = self._next_task or self._claim(), None
                if task is not None:
                    self._run_task(task)
        except FarmhandError as exc:
            if not exc.runner_deleted:
                self.log.error("manager refused this worker", error=str(exc))
                return 2
            self._refused(exc)
        finally:
            self.stop.set()
            if self._deleted is None:
                self._wind_down(beat)
            else:
                # The manager refuses this secret and requeued the task itself: there is
                # nothing to give back and no one to sign off as.
                beat.join(timeout=self.settings.shutdown_grace)
            if isinstance(self.renderer, ClosableRenderer):
                self.renderer.close()
        return 0 if self._deleted is None else self._locked_out()

    def _manager_version(self, refusal: FarmhandError) -> str | None:
        """The farmhand version the manager that refused us reports (`/healthz`), or None
        if it could not be read; not asked when the manager was not reached at all."""
        if refusal.status_code is None:
            return None
        try:
            return self.client.health().version
        except FarmhandError:
            return None

    def _wind_down(self, beat: threading.Thread) -> None:
        """A clean stop: give back what the manager handed us last, sign off."""
        if self._next_task is not None:  # handed to us as we were stopping
            self._release(self._next_task, self.log)
            self._next_task = None
        # No heartbeat may follow the sign-off: it would mark us online again.
        beat.join(timeout=self.settings.shutdown_grace)
        self._sign_off()
        # The signed-off manager ends the poll abandoned at the stop at its next look;
        # one it had answered with a task just before is given back here, before we
        # exit, and the manager told again that we are gone (the poll seemed alive).
        late = self._late_claim
        if late is not None:
            late.join(timeout=self.settings.shutdown_grace + 1)
            if self._late_released.is_set():
                self._sign_off()

    def _refused(self, exc: FarmhandError) -> None:
        """Note a 401 saying an admin deleted this runner, and stop the worker: its task
        is canceled (the caller drops it) and it does not register again by itself, as
        it does when its secret is merely unknown. Any other error: nothing."""
        if exc.status_code != 401 or not exc.runner_deleted:
            return
        with self._current_lock:
            if self._deleted is None:
                self._deleted = exc
        self.stop.set()

    def _locked_out(self) -> int:
        """The one line a deleted runner's worker leaves, quoting the manager."""
        assert self._deleted is not None
        self.log.error(
            "the manager refuses this runner: an admin deleted it; stopping. To put this "
            "machine back on the farm as a new runner, start it with --register-again",
            detail=self._deleted.detail,
        )
        return EXIT_DELETED

    def _connect(self) -> None:
        """Reuse the stored identity unless the manager rejects it (401): then register,
        unless the 401 says an admin deleted this runner (raised: the worker stops)."""
        identity = load_identity(self.settings.work_dir)
        if identity is not None and self.settings.register_again:
            self.log.warning(
                "--register-again: the stored identity is thrown away", worker_id=identity.worker_id
            )
        elif identity is not None and identity.matches(
            self.settings.manager_url, self.settings.name
        ):
            self.client.set_token(identity.secret)
            try:
                # Before `starting` gives back what we held: what a killed run of this
                # worker rendered but never delivered is delivered now, not redone.
                deliver_pending(self.outbox, self.client, self.stop, self.log)
                # `starting`: a task the manager still counts as ours (we were killed
                # mid-task) goes back to the queue now, not after a heartbeat timeout.
                self._retry_forever(
                    lambda: self.client.heartbeat(capabilities=self.capabilities, starting=True),
                    "heartbeat",
                )
                self.log = self.log.bind(worker_id=identity.worker_id)
                self.log.info("identity reused", manager=self.settings.manager_url)
                return
            except FarmhandError as exc:
                if exc.status_code != 401 or exc.runner_deleted:
                    raise
                self.log.warning("stored identity rejected; registering again")
        self._register()

    def _register(self) -> None:
        if not self.settings.registration_token:
            raise FarmhandError("no registration token: pass --token or set FARMHAND_RUNNER_TOKEN")
        forget_identity(self.settings.work_dir)
        for box in self.outbox.pending():
            box.discard()  # a new identity holds none of the old one's tasks
        self.client.set_token(None)
        registered = self._retry_forever(
            lambda: self.client.register(
                self.settings.registration_token, self.settings.name, self.capabilities
            ),
            "register",
        )
        save_identity(
            self.settings.work_dir,
            Identity(
                manager_url=self.settings.manager_url,
                worker_id=registered.worker_id,
                name=registered.name,
                secret=registered.secret,
            ),
        )
        self.log = self.log.bind(worker_id=registered.worker_id)
        self.log.info("registered", manager=self.settings.manager_url)

    def _retry_forever(self, fn: Callable[[], _T], what: str) -> _T:
        return self._retried(fn, what, self.log, RetryPolicy(give_up_after=None))

    def _retried(
        self,
        fn: Callable[[], _T],
        what: str,
        tlog: FilteringBoundLogger,
        policy: RetryPolicy | None = None,
        *,
        stoppable: bool = True,
    ) -> _T:
        """A call to the manager, retried by `policy` (the task calls': `retry_for`) and
        given up when the worker stops (unless not `stoppable`); its outage said in the
        worker's one log (`_outage`), with `tlog`'s fields (a task's ids)."""
        return call_with_retry(
            fn,
            what,
            policy or self._task_policy,
            self.stop if stoppable else None,
            logger=tlog,
            outage=self._outage,
        )

    def _sign_off(self) -> None:
        try:
            self.client.sign_off()
            self.log.info("signed off")
        except FarmhandError as exc:
            self.log.warning("sign-off failed", error=str(exc))

    # -- background calls

    def _heartbeat_loop(self) -> None:
        """Tell the manager we are alive and what we run; obey its abort list."""
        while not self.stop.wait(self.settings.heartbeat_interval):
            with self._current_lock:
                run = self._current
            task_id = run.task.task_id if run else None
            began = self._outage.clock()
            try:
                reply = self.client.heartbeat(current_task_id=task_id)
            except FarmhandError as exc:
                self._refused(exc)
                if exc.status_code == 401 and run is not None:
                    run.drop(f"manager answered {exc}")
                if is_retryable(exc):
                    every = self.settings.heartbeat_interval
                    self._outage.failed(self.log, "heartbeat", exc, every, began, task_id=task_id)
                elif self._deleted is None:
                    self.log.warning("heartbeat failed", error=str(exc), task_id=task_id)
                continue
            self._outage.answered(self.log, "heartbeat", task_id=task_id)
            if run is not None and run.task.task_id in reply.abort_task_ids and not run.ending:
                self.log.info("manager aborted the task", task_id=task_id, job_id=run.task.job_id)
                run.drop("aborted by the manager")

    def _progress_loop(self, run: _TaskRun, tlog: FilteringBoundLogger) -> None:
        """Send progress at most every `progress_interval`; stop if told `keep_going: false`.

        One attempt per tick: a failed call keeps its log lines for the next tick, which
        is the retry, and never holds up the render.
        """
        while not run.finished.wait(self.settings.progress_interval):
            self._send_progress(run, tlog)

    def _send_progress(self, run: _TaskRun, tlog: FilteringBoundLogger) -> None:
        with run.sending:
            self._send_progress_now(run, tlog)

    def _send_progress_now(self, run: _TaskRun, tlog: FilteringBoundLogger) -> None:
        if run.dropped:
            return
        progress = run.take_progress()
        if progress is None:
            return
        began = self._outage.clock()
        try:
            reply = self.client.progress(run.task.task_id, progress)
            run.sent()
        except FarmhandError as exc:
            if is_retryable(exc):
                run.give_back(progress)
                every = self.settings.progress_interval
                self._outage.failed(tlog, "progress", exc, every, began)
            elif is_task_gone(exc):
                self._refused(exc)
                run.drop(f"manager answered {exc}")
                if self._deleted is None:
                    tlog.info("task taken away", error=str(exc))
            else:
                tlog.warning("progress rejected", error=str(exc))
            return
        self._outage.answered(tlog, "progress")
        if not reply.keep_going:
            tlog.info("manager said stop (keep_going false)")
            run.drop("manager said keep_going: false")

    @contextmanager
    def _reporting(self, run: _TaskRun, tlog: FilteringBoundLogger) -> Iterator[None]:
        """Report the task's progress and log lines while the block runs.

        The reporter is also how a task hears that the manager took it away (`keep_going:
        false` drops the run, which sets `run.cancel`), so every kind of task runs its
        work inside this block: without it a cancel or pause waits for the task to end,
        and its log reaches the web UI only with the outcome. On exit the reporter stops
        (`run.finished`) and is waited for, at most `shutdown_grace`.
        """
        reporter = threading.Thread(
            target=self._progress_loop, args=(run, tlog), name="progress", daemon=True
        )
        reporter.start()
        try:
            yield
        finally:
            run.finished.set()
            reporter.join(timeout=self.settings.shutdown_grace)
            self._outage.withdrawn("progress")  # this task's reports end here

    # -- claiming

    def _claim(self) -> TaskAssignment | None:
        """Long-poll for a task, interruptible by `stop`; retries while unreachable."""
        attempt = 0
        while not self.stop.is_set():
            began = self._outage.clock()
            try:
                task = self._interruptible(
                    lambda: self.client.claim(self.settings.poll_wait, prefer_job=self._held_job)
                )
                self._outage.answered(self.log, "claim")
                return task
            except RetryAborted:
                return None
            except FarmhandError as exc:
                if exc.runner_deleted:
                    raise
                if exc.status_code == 401:
                    self.log.warning("manager no longer knows this runner; registering again")
                    self._register()
                    continue
                delay = min(CLAIM_RETRY_MAX, 0.5 * 2**attempt)
                attempt += 1
                if is_retryable(exc):
                    self._outage.failed(self.log, "claim", exc, CLAIM_RETRY_MAX, began)
                else:
                    self.log.error("claim refused; retrying", error=str(exc), in_seconds=delay)
                self.stop.wait(delay)
        return None

    def _interruptible(self, fn: Callable[[], TaskAssignment | None]) -> TaskAssignment | None:
        """Run a long-poll in a thread so SIGTERM need not wait for it to time out.

        A task that arrives after we stopped waiting is released at once.
        """
        box: dict[str, object] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="claim", daemon=True).start()
        while not done.wait(0.2):
            if self.stop.is_set():
                self._late_claim = threading.Thread(
                    target=self._release_late_claim, args=(done, box), daemon=True
                )
                self._late_claim.start()
                raise RetryAborted("claim")
        error = box.get("error")
        if isinstance(error, BaseException):
            raise error
        value = box.get("value")
        return value if isinstance(value, TaskAssignment) else None

    def _release_late_claim(self, done: threading.Event, box: dict[str, object]) -> None:
        if done.wait(self.settings.shutdown_grace):
            value = box.get("value")
            if isinstance(value, TaskAssignment):
                self._release(value, self.log)
                self._late_released.set()

    # -- one task

    def _run_task(self, task: TaskAssignment) -> None:
        run = _TaskRun(task)
        tlog = self.log.bind(job_id=task.job_id, task_id=task.task_id)
        tlog.info("task claimed", frames=_frame_list(task.frames, 5), attempt=task.attempt)
        with self._current_lock:
            self._current = run
        try:
            self._do_task(run, tlog)
        except Exception as exc:
            if self._gave_back(run, exc, tlog):
                return
            # A bug here must cost one task, not the worker.
            tlog.exception("worker error")
            if not run.dropped and not self.stop.is_set():
                self._fail(run, f"worker error: {exc}", [], tlog)
        finally:
            run.finished.set()
            with self._current_lock:
                self._current = None

    def _do_task(self, run: _TaskRun, tlog: FilteringBoundLogger) -> None:
        task = run.task
        if task.type == "video":
            self._do_video(run, tlog)
            return
        if task.type == "merge":
            self._do_merge(run, tlog)
            return
        work = self.settings.work_dir
        job_dir = work / "jobs" / str(task.job_id)
        log_path = work / "logs" / f"job-{task.job_id}-task-{task.task_id}.log"
        try:
            if task.storage == "shared":
                blend = shared_blend(task, self.settings.platform, self.settings.path_map)
                tlog.info("files on shared storage", blend=str(blend))
            else:
                blend = self._materialise(task, job_dir, tlog)
            # A tile is part of a frame, not the frame: written into `output_dir` under
            # the frame's name it would clobber the merged frame. Only the merge writes
            # there (`_do_merge`); a tile goes to the manager alone.
            shared_out = (
                SharedOutputs(task, self.settings.platform, self.settings.path_map)
                if task.output_dir is not None and task.tile is None
                else None
            )
        except RetryAborted:
            self._give_back(run, tlog)
            return
        except (CacheError, FarmhandError, OSError, SharedStorageError) as exc:
            if self._gave_back(run, exc, tlog):
                return
            if isinstance(exc, FarmhandError) and (is_retryable(exc) or is_task_gone(exc)):
                self._refused(exc)
                tlog.error("cannot fetch the job's files; dropping the task", error=str(exc))
                return
            self._fail(run, f"cannot fetch the job's files: {exc}", [], tlog)
            return
        # Frames, log lines and the outcome are kept on disk until reported (outbox.py).
        try:
            box = self.outbox.open(task)
        except OutboxError as exc:
            if not self._gave_back(run, exc, tlog):
                self._fail(run, str(exc), [], tlog)
            return
        run.box = box
        output_dir = box.frames_dir
        log_path.parent.mkdir(parents=True, exist_ok=True)
        on_log = box.logging(run.log_line)

        uploader = FrameUploader(
            partial(self._upload_frame, run),
            self._task_policy,
            logger=tlog,
            on_uploaded=run.uploaded,
            outage=self._outage,
        )
        send = uploader.submit if shared_out is None else _both(shared_out.publish, uploader.submit)

        def frame_saved(frame: int, path: Path) -> None:
            box.keep(run.rendered(frame, path))  # on disk before it leaves
            send(frame, path)

        try:
            # The reporter runs until the outcome is reported (`_finish` waits for the
            # uploads): a cancel during the uploads still reaches this task.
            with self._reporting(run, tlog):
                job = RenderJob(
                    task=task,
                    blend_file=blend,
                    output_dir=output_dir,
                    log_path=log_path,
                    threads=self.settings.threads,
                    cancel=run.cancel,
                    on_frame_started=run.frame_started,
                    on_frame_saved=frame_saved,
                    on_samples=run.samples,
                    on_log=on_log,
                    on_frame_stats=run.frame_stats,
                    on_frame_files=_noting_tile_files(task, run.frame_files, on_log),
                    on_scene=run.scene,
                    stall_timeout=self.settings.task_timeout or task.task_timeout,
                    path_remap=(
                        remap_pairs(
                            path_table(task, self.settings.path_map), self.settings.platform
                        )
                        if task.storage == "shared"
                        else []
                    ),
                    session_key=session_key(task),
                )
                self._held_job = task.job_id
                outcome = self._render(job, tlog)
                if not self._machine_fault(run, outcome.causes, uploader, tlog):
                    self._finish_render(run, outcome, box, shared_out, uploader, tlog)
        finally:
            # Whatever happened, the box goes: its outcome was reported, or it never will
            # be by this run, and a full disk must not stay full for the next task.
            uploader.abandon()
            box.discard()
        prune_job_dirs(work / "jobs", current=task.job_id)
        prune_task_logs(log_path.parent)

    def _finish_render(
        self,
        run: _TaskRun,
        outcome: RenderOutcome,
        box: TaskBox,
        shared_out: SharedOutputs | None,
        uploader: FrameUploader,
        tlog: FilteringBoundLogger,
    ) -> None:
        """A render that met no fault of this machine: its outcome into the box, then
        reported (`_finish`); a box that cannot be written gives the task back if that is
        this machine's fault (its disk full), else fails it with that reason."""
        share_error = _share_failure(shared_out)
        if share_error is not None and outcome.ok:
            outcome = RenderOutcome(ok=False, error=share_error, log_tail=outcome.log_tail)
        if not run.dropped and not self.stop.is_set():
            tail = outcome.log_tail[-LOG_TAIL_LINES:]
            box.finish(Outcome(outcome.ok, outcome.error, tail))
            if box.broken is not None:
                faults = () if box.fault is None else (box.fault,)
                if self._machine_fault(run, faults, uploader, tlog):
                    return
                # Not the machine's (the frames already uploaded stay on the manager).
                outcome = RenderOutcome(ok=False, error=box.broken, log_tail=outcome.log_tail)
            self._fault_cleared(tlog)
        self._finish(run, outcome, uploader, tlog)

    def _machine_fault(
        self,
        run: _TaskRun,
        causes: Sequence[BaseException],
        uploader: FrameUploader,
        tlog: FilteringBoundLogger,
    ) -> bool:
        """If one of `causes` is this machine's fault (`local_fault`), stop the task's
        uploads and give it back (`_gave_back`: no attempt counted, a pause); True if so.
        Not while the worker stops or the task was taken away: `_finish` ends those."""
        if run.dropped or self.stop.is_set():
            return False
        for cause in causes:
            if self._local_fault(run, cause) is not None:
                uploader.abandon()
                uploader.join(2.0)
                return self._gave_back(run, cause, tlog)
        return False

    def _do_video(self, run: _TaskRun, tlog: FilteringBoundLogger) -> None:
        """Make the job's video from its frames (`worker/video.py`), upload it, report."""
        task = run.task
        if self.ffmpeg is None:
            self._fail(run, "this worker has no ffmpeg; it should not get video tasks", [], tlog)
            return
        work_dir = self.settings.work_dir / "outputs" / f"task-{task.task_id}"
        fetch = self._job_file_fetcher(task, "output", tlog)
        work = VideoWork(
            task,
            work_dir,
            run.cancel,
            self.cache,
            fetch,
            run.frame_started,
            run.log_line,
            self._scene_opener(run, work_dir, tlog),
        )
        with self._reporting(run, tlog), self._follow_up(run, "video", "the video", tlog):
            try:
                ffmpeg = self.ffmpeg
                made = self._stop_cancels(
                    lambda: make_video(work, ffmpeg), run.cancel, "video", tlog
                )
                if run.dropped or self.stop.is_set() or not made:
                    if not run.dropped:
                        self._give_back(run, tlog)
                elif not (result := made[0]).ok or result.video is None:
                    self._fail(run, result.error or "video failed", result.log_tail, tlog)
                else:
                    video = result.video
                    self._deliver(
                        run,
                        lambda: self.client.upload_video(task.job_id, task.task_id, video),
                        "upload video",
                        [],
                        tlog,
                    )
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)

    def _scene_opener(
        self, run: _TaskRun, work_dir: Path, tlog: FilteringBoundLogger
    ) -> Callable[[], SceneLook] | None:
        """How a video of EXR frames opens its job's scene in this worker's Blender
        (`video.SceneLook`); None when the renderer has no Blender to offer. Only the main
        .blend is fetched (colour management and view layers are the scene's own), from
        the cache or the share as a render would read it."""
        renderer = self.renderer
        if not isinstance(renderer, SceneLooks):
            return None
        task = run.task

        def open_scene() -> SceneLook:
            try:
                if task.storage == "shared":
                    blend = shared_blend(task, self.settings.platform, self.settings.path_map)
                else:
                    main = [f for f in task.files if f.path == task.main_file]
                    job_dir = self.settings.work_dir / "jobs" / str(task.job_id)
                    blend = self._materialise(task, job_dir, tlog, main)
            except (CacheError, FarmhandError, OSError, SharedStorageError) as exc:
                raise SceneUnavailable(f"cannot fetch the .blend: {exc}") from exc
            return renderer.scene_look(
                task, blend, work_dir / "blender.log", run.log_line, run.cancel
            )

        return open_scene

    def _deliver(
        self,
        run: _TaskRun,
        upload: Callable[[], object],
        what: str,
        frames: list[int],
        tlog: FilteringBoundLogger,
    ) -> None:
        """Upload a video's or a merge's result, retried as the task's other calls are,
        then complete the task with `frames`."""
        self._retried(upload, what, tlog)
        self._complete(run, frames, tlog)

    @contextmanager
    def _follow_up(
        self, run: _TaskRun, kind: str, result: str, tlog: FilteringBoundLogger
    ) -> Iterator[None]:
        """How a video or merge task ends when a manager call (a download, the upload)
        does not go through: a worker stopping gives it back; a manager that took it away
        or cannot be reached drops it (the task goes back to the queue there); any other
        refusal fails it, naming `result`."""
        try:
            yield
        except RetryAborted:
            self._give_back(run, tlog)
        except FarmhandError as exc:
            self._refused(exc)
            if is_task_gone(exc) or is_retryable(exc):
                tlog.info(f"{kind} task dropped", error=str(exc))
            else:
                self._fail(run, f"uploading {result} failed: {exc}", [], tlog)

    def _job_file_fetcher(
        self, task: TaskAssignment, kind: str, tlog: FilteringBoundLogger
    ) -> Callable[[FrameFile | TileFile, Path], None]:
        """Download one of the job's stored files (`kind`: a frame for a video, a tile for
        a merge) to a path, retrying network errors as the task's other calls do."""

        def fetch(file: FrameFile | TileFile, dest: Path) -> None:
            self._retried(
                lambda: self.client.download_input(task.job_id, file.path, dest, kind=kind),
                f"download {file.path}",
                tlog,
            )

        return fetch

    def _do_merge(self, run: _TaskRun, tlog: FilteringBoundLogger) -> None:
        """Merge a tiled still's tiles into its frame (`worker/merge.py`), upload it, report.

        The merge stops between tiles once the manager takes the task away (the reporter
        drops the run) or the worker stops: then nothing is uploaded and the task is not
        failed, only released when the worker stops, as a video is.

        A job with `output_dir` gets the merged frame on the share too, named and written
        as a render task's frame (`SharedOutputs`), before the upload: the merge is the
        one task that makes the frame (tile tasks write nothing there), and a frame that
        cannot be written fails the task, as it fails a render task. The share is mapped
        before any tile is fetched, so a worker without a root for it fails at once.
        """
        task = run.task
        shared_out: SharedOutputs | None = None
        if task.output_dir is not None:
            try:
                shared_out = SharedOutputs(task, self.settings.platform, self.settings.path_map)
            except SharedStorageError as exc:
                self._fail(run, f"cannot write to shared storage: {exc}", [], tlog)
                return
        work_dir = self.settings.work_dir / "outputs" / f"task-{task.task_id}"
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        fetch = self._job_file_fetcher(task, "tile", tlog)
        [frame] = task.frames
        work = MergeWork(
            task.tile_files,
            work_dir,
            self.cache,
            fetch,
            canceled=lambda: run.cancel.is_set() or self.stop.is_set(),
            on_log=run.log_line,
        )
        with (
            self._reporting(run, tlog),
            self._follow_up(run, "merge", "the merged frame", tlog),
        ):
            try:
                run.frame_started(frame)
                # The frame is in the tiles' format (PNG or OpenEXR): for a job keeping the
                # .blend's format the scene chose it, so the tiles say which, not the job.
                output = work_dir / f"frame_{frame:04d}{merged_suffix(task.tile_files)}"
                width, height = merge(work, output)
                run.log_line(f"merged {len(task.tile_files)} tiles into a {width}x{height} frame")
                if shared_out is not None:
                    shared_out.publish(frame, output)
                    share_error = _share_failure(shared_out)
                    if share_error is not None:
                        self._fail(run, share_error, [], tlog)
                        return
                self._deliver(
                    run,
                    lambda: self.client.upload_output(task.job_id, task.task_id, frame, output),
                    "upload merged frame",
                    [frame],
                    tlog,
                )
            except MergeCanceled:
                if run.dropped:
                    tlog.info("task dropped", reason=run.dropped_reason)
                else:
                    self._give_back(run, tlog)
            except MergeError as exc:
                self._fail(run, str(exc), [], tlog)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)

    def _upload_frame(self, run: _TaskRun, frame: int, path: Path) -> object:
        """Send a frame with its passes and preview (`uploads.upload_frame`, which the
        outbox's delivery after a restart uses too)."""
        return upload_frame(self.client, run.task, run.rendered(frame, path), self.log)

    def _materialise(
        self,
        task: TaskAssignment,
        job_dir: Path,
        tlog: FilteringBoundLogger,
        files: list[TaskFile] | None = None,
    ) -> Path:
        """Lay out the task's files (or only `files` of them) in `job_dir`; the .blend."""
        files = task.files if files is None else files

        def download(task_file: object, dest: Path) -> None:
            path = getattr(task_file, "path", "")
            self._retried(
                lambda: self.client.download_input(task.job_id, path, dest),
                f"download {path}",
                tlog,
            )

        report = materialise(self.cache, job_dir, files, download, trees=job_dir.parent)
        tlog.info(
            "files ready",
            files=len(files),
            job_dir=str(job_dir),
            downloaded_files=report.downloaded_files,
            downloaded_bytes=report.downloaded_bytes,
            cached_files=report.cached_files,
            copied=report.copied,
        )
        return job_dir / task.main_file

    def _render(self, job: RenderJob, tlog: FilteringBoundLogger) -> RenderOutcome:
        """Render, cancelable by a worker stop (`_stop_cancels`); a crash is an outcome."""

        def render() -> RenderOutcome:
            try:
                return self.renderer(job)
            except Exception as exc:
                tlog.exception("renderer crashed")
                error = f"worker error while rendering: {exc}"
                return RenderOutcome(ok=False, error=error, causes=[exc])

        done = self._stop_cancels(render, job.cancel, "render", tlog)
        return done[0] if done else RenderOutcome(ok=False, error="render did not stop in time")

    def _stop_cancels(
        self, work: Callable[[], _T], cancel: threading.Event, what: str, tlog: FilteringBoundLogger
    ) -> list[_T]:
        """Run `work` in a thread while this one watches for a worker stop (Ctrl-C,
        SIGTERM), which sets `cancel`: Blender or ffmpeg is then stopped and the task
        given back, rather than the worker waiting for a render or an encode that may
        take an hour to end. `work`'s result, or nothing if it did not end within
        `shutdown_grace` of the stop; what it raises is raised here."""
        box: list[_T] = []
        raised: list[BaseException] = []

        def target() -> None:
            try:
                box.append(work())
            except BaseException as exc:  # handed to the calling thread
                raised.append(exc)

        thread = threading.Thread(target=target, name=what, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            if self.stop.is_set():
                tlog.info(f"stopping: canceling the {what}")
                cancel.set()
                thread.join(self.settings.shutdown_grace)
                break
        if raised:
            raise raised[0]
        return box

    def _finish(
        self,
        run: _TaskRun,
        outcome: RenderOutcome,
        uploader: FrameUploader,
        tlog: FilteringBoundLogger,
    ) -> None:
        """Turn the render's outcome into exactly one of: drop, release, fail, complete."""
        task = run.task
        if run.dropped or self.stop.is_set():
            uploader.abandon()
            uploader.join(2.0)
            if run.dropped:
                tlog.info("task dropped", reason=run.dropped_reason)
            else:
                self._give_back(run, tlog)
            return
        uploader.close()
        while not uploader.join(0.2):
            if self.stop.is_set() or run.dropped:
                uploader.abandon()
                uploader.join(2.0)
                if not run.dropped:
                    self._give_back(run, tlog)
                return
        report = uploader.report()
        if run.dropped:
            tlog.info("task dropped", reason=run.dropped_reason)
            return
        tail = outcome.log_tail[-LOG_TAIL_LINES:]
        if not outcome.ok:
            self._fail(run, outcome.error or "render failed", tail, tlog)
        elif report.error is not None:
            if is_task_gone(report.error):
                self._refused(report.error)
                tlog.info("task taken away during upload", error=str(report.error))
            elif is_retryable(report.error):
                tlog.error("manager unreachable for too long; dropping the task")
            else:
                self._fail(run, f"uploading a frame failed: {report.error}", tail, tlog)
        else:
            missing = sorted(set(task.render_frames) - set(report.uploaded))
            if missing:
                self._fail(run, f"Blender did not save frames {_frame_list(missing)}", tail, tlog)
            else:
                self._complete(run, sorted(report.uploaded), tlog)

    # -- outcomes (retried while the manager is away)

    def _flush_logs(
        self, run: _TaskRun, tlog: FilteringBoundLogger, wait: float | None = None
    ) -> bool:
        """Send buffered log lines before the outcome, so the task log is whole.

        True when every line reached the manager. Waits for a progress call the reporter
        has under way (`run.sending`): its lines must arrive before the outcome. With
        `wait`, the whole flush (that wait and its own calls) takes at most `wait` seconds:
        a worker stopping must not hold its stop for a manager that does not answer.
        """
        deadline = None if wait is None else self._outage.clock() + wait
        if not run.sending.acquire(timeout=-1 if wait is None else wait):
            tlog.warning("log lines not sent: a progress call is still under way")
            return False
        try:
            return self._flush_logs_now(run, tlog, deadline)
        finally:
            run.sending.release()

    def _flush_logs_now(
        self, run: _TaskRun, tlog: FilteringBoundLogger, deadline: float | None
    ) -> bool:
        for _ in range(MAX_PENDING_LOG_LINES // MAX_LOG_LINES_PER_CALL + 1):
            progress = run.take_progress()
            if progress is None:
                return True
            if run.dropped:
                return False
            left = None if deadline is None else deadline - self._outage.clock()
            if left is not None and left <= 0:
                tlog.warning("log lines not sent: no time left to send them")
                return False
            try:
                self._retried(
                    partial(self.client.progress, run.task.task_id, progress, left),
                    "progress",
                    tlog,
                    RetryPolicy(give_up_after=30.0 if left is None else left),
                )
                run.sent()
            except (FarmhandError, RetryAborted) as exc:
                tlog.warning("log lines not sent", error=str(exc))
                return False
        return False

    def _complete(self, run: _TaskRun, frames: list[int], tlog: FilteringBoundLogger) -> None:
        self._flush_logs(run, tlog)
        run.ending = True
        # Ask for the next task with the completion: one request fewer between tasks.
        outcome = self._outcome(
            run,
            lambda: self.client.complete(
                run.task.task_id, frames, claim_next=not self.stop.is_set()
            ),
            "complete",
            tlog,
        )
        if isinstance(outcome, CompletionOutcome) and outcome.next_task is not None:
            self._next_task = outcome.next_task

    def _fail(
        self, run: _TaskRun, reason: str, tail: list[str], tlog: FilteringBoundLogger
    ) -> None:
        tlog.error("task failed", reason=reason)
        # The fail call's lines are appended to the task log: send the tail again only if
        # the log itself did not get through, so the log never shows them twice.
        sent = self._flush_logs(run, tlog)
        run.ending = True
        lines = [] if sent else tail
        self._outcome(run, lambda: self.client.fail(run.task.task_id, reason, lines), "fail", tlog)

    def _outcome(
        self,
        run: _TaskRun,
        call: Callable[[], object],
        what: str,
        tlog: FilteringBoundLogger,
    ) -> object:
        """The manager's answer to the outcome, or None if it was not delivered."""
        try:
            outcome = self._retried(call, what, tlog)
        except RetryAborted:
            self._give_back(run, tlog)
            return None
        except FarmhandError as exc:
            self._refused(exc)
            if self._deleted is None:
                tlog.error(f"{what} not accepted", error=str(exc))
            return None
        if isinstance(outcome, TaskOutcome):
            tlog.info(
                f"task {what} reported",
                task_status=outcome.task_status.value,
                job_status=outcome.job_status.value,
                next_task_id=(
                    outcome.next_task.task_id
                    if isinstance(outcome, CompletionOutcome) and outcome.next_task
                    else None
                ),
            )
        else:
            tlog.info(f"task {what} reported", outcome=str(outcome))
        return outcome

    def _gave_back(self, run: _TaskRun, exc: BaseException, tlog: FilteringBoundLogger) -> bool:
        """If `exc` is this machine's fault (`local_fault`), give the task back (no
        attempt counted, no blocklist: another worker renders it) and take no task for a
        while, 30 s doubling to 10 minutes while the fault lasts; True if so. Said once
        per episode, as an error: one line to act on, not one per task."""
        why = self._local_fault(run, exc)
        if why is None or run.dropped:
            return False
        first = self._fault_pause == 0.0
        self._fault_pause = (
            FAULT_PAUSE_FIRST if first else min(FAULT_PAUSE_MAX, self._fault_pause * 2)
        )
        self._paused = True
        if first:
            tlog.error(
                "this machine cannot work: giving the task back and taking no task for a "
                "while (retrying after 30 s, then up to every 10 minutes)",
                error=why,
            )
        else:
            tlog.debug("still cannot work", error=why, next_try_seconds=self._fault_pause)
        self._give_back(run, tlog, f"worker {self.settings.name} cannot work: {why}")
        return True

    def _local_fault(self, run: _TaskRun, exc: BaseException) -> str | None:
        """`local_fault` for this worker's task: why `exc` is this machine's fault, or None."""
        settings = self.settings
        return local_fault(exc, run.task, settings.platform, settings.path_map, settings.work_dir)

    def _fault_cleared(self, tlog: FilteringBoundLogger) -> None:
        """A task was rendered and kept without a fault of this machine: a local fault, if
        there was one, is over. Not sooner (once its files are in place): a disk that fills
        while the frames are written would be said to work again at each task, and the
        pause would never grow."""
        if self._fault_pause:
            self._fault_pause = 0.0
            tlog.info("this machine works again; taking tasks")

    def _give_back(
        self, run: _TaskRun, tlog: FilteringBoundLogger, reason: str | None = None
    ) -> None:
        """Give back a task that ran (`_release`), first sending the log lines the manager
        lacks, as an outcome does: the manager refuses progress for a task given back,
        and an admin looking into the give-back needs what Blender said up to it. While
        the worker stops, each call of that is tried once, and the whole flush takes at
        most `shutdown_grace`."""
        if self._deleted is None and not run.dropped:
            self._flush_logs(run, tlog, wait=self.settings.shutdown_grace)
            run.ending = True
        self._release(run.task, tlog, reason)

    def _release(
        self, task: TaskAssignment, tlog: FilteringBoundLogger, reason: str | None = None
    ) -> None:
        """Give the task back without it counting as an attempt (shutdown, local fault)."""
        if self._deleted is not None:
            return  # the manager requeued it when the runner was deleted
        try:
            self._retried(
                lambda: (
                    self.client.release(task.task_id)
                    if reason is None
                    else self.client.release(task.task_id, reason)
                ),
                "release",
                tlog,
                RetryPolicy(give_up_after=self.settings.shutdown_grace, max_delay=1.0),
                stoppable=False,
            )
            tlog.info("task released", task_id=task.task_id)
        except FarmhandError as exc:
            tlog.warning("release failed", task_id=task.task_id, error=str(exc))


def _frame_list(frames: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


# --------------------------------------------------------------------- entry


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set `stop`; a second signal gets the default (immediate) behaviour."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop.set()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_worker(
    settings: WorkerSettings,
    *,
    renderer: TaskRenderer | None = None,
    blender_versions: list[str] | None = None,
    transport: httpx.BaseTransport | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run a worker until stopped; the process exit code.

    Without `renderer`, Blender is found (`settings.blender`, `FARMHAND_BLENDER`, PATH,
    `bpy`) and used. Signal handlers are installed when called from the main thread.
    The work dir is held for the whole run (`identity.holding_work_dir`): a second
    worker on it raises WorkDirInUse, and a work dir it cannot write WorkDirError, before
    it looks for Blender or calls the manager.
    """
    with holding_work_dir(settings.work_dir):
        check_work_dir(settings.work_dir)
        return _run_holding(settings, renderer, blender_versions, transport, stop)


def _run_holding(
    settings: WorkerSettings,
    renderer: TaskRenderer | None,
    blender_versions: list[str] | None,
    transport: httpx.BaseTransport | None,
    stop: threading.Event | None,
) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop)
    devices: list[tuple[str, str]] = []
    if renderer is None:
        renderer, blender_versions, devices = blender_renderer(settings)
    caps = hardware.capabilities(
        blender_versions or [],
        settings.tags,
        device=settings.device,
        gpu=settings.gpu,
        blender_devices=devices,
        manager_url=settings.manager_url,
    )
    ffmpeg = find_ffmpeg(settings.ffmpeg)
    if ffmpeg is not None:
        # Only a worker that can make videos is offered video tasks.
        caps.task_types = [*caps.task_types, "video"]
        log.info("ffmpeg found", ffmpeg=ffmpeg.ffmpeg, version=ffmpeg.version)
    caps.task_types = [*caps.task_types, "merge"]  # tiles of a still: Pillow and OpenEXR are enough
    with RunnerClient(settings.manager_url, verify=settings.verify, transport=transport) as client:
        agent = Agent(settings, renderer, client, caps, stop, ffmpeg=ffmpeg)
        return agent.run()


def blender_renderer(
    settings: WorkerSettings,
) -> tuple[TaskRenderer, list[str], list[tuple[str, str]]]:
    """The real renderer: Blenders found once at start-up, kept per job in a session.

    Each Blender is asked which devices it sees; a `--device` one of them cannot use
    raises BlenderNotFound here, before the worker takes any task.
    Returns (renderer, Blender versions, devices the Blenders see).
    """
    from farmhand.worker.blender.devices import blender_devices, check_device
    from farmhand.worker.blender.discovery import find_blenders
    from farmhand.worker.blender.renderer import BlenderTaskRenderer

    specs = settings.blenders or ([settings.blender] if settings.blender else [])
    installs = find_blenders(specs)
    seen: list[tuple[str, str]] = []
    for install in installs:
        devices = blender_devices(install)
        check_device(install, settings.device, settings.gpu, devices)
        seen += [device for device in devices if device not in seen]
        log.info(
            "blender found",
            version=install.version,
            blender=install.spec,
            devices=[f"{kind}: {name}" for kind, name in devices],
        )
    log.info(
        "rendering with",
        device=settings.device,
        gpu=settings.gpu,
        sessions=settings.sessions,
        session_frames=settings.session_frames,
        session_memory_mb=settings.session_memory_mb,
    )
    renderer = BlenderTaskRenderer(
        installs,
        sessions=settings.sessions,
        max_frames=settings.session_frames,
        max_memory_mb=settings.session_memory_mb,
        device=settings.device,
        gpu=settings.gpu,
    )
    return renderer, [install.version for install in installs], seen
