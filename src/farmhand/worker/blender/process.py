"""Run Blender for render requests, and decide honestly whether each one worked.

Blender can exit 0 after failing (a missing camera is an error *message*), and a killed
Blender leaves half-written files. So success here means all of: the driver reported no
error, every expected frame exists and is a complete image of the expected size, and
the process exited 0 (or, in a session that lives on, is still running). Anything else
is a failure with one line a person can act on.

`BlenderProcess` is one running Blender that takes requests one after another; `render()`
is that process used once, and `session.BlenderSession` keeps it for many tasks. Both go
through the same code, so a session is judged exactly like a one-shot render.

Blender runs in its own process group, so canceling kills it and anything it started,
and it dies with its worker (`orphans.py`: killed by Linux if the worker is, and what a
crashed run left is swept when the worker starts again).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import structlog
from PIL import Image
from structlog.typing import FilteringBoundLogger

from farmhand.shared.images import ImageError, verify_image
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import (
    Displayed,
    DriverError,
    Event,
    FrameSaved,
    FrameStarted,
    FrameStats,
    Opened,
    RenderDone,
    parse_event_line,
    parse_progress_line,
)
from farmhand.worker.blender.orphans import MARK_VARIABLE, PidFiles, spawn
from farmhand.worker.blender.procfs import group_members

log: FilteringBoundLogger = structlog.get_logger(__name__)

DRIVER = Path(__file__).with_name("driver.py")
KILL_GRACE = 3.0
LOG_TAIL = 50
MEMORY_SAMPLE_INTERVAL = 0.5
"""Seconds between looks at Blender's resident memory and CPU time while it renders."""
WORKING_TICKS = max(2, math.ceil(os.sysconf("SC_CLK_TCK") * MEMORY_SAMPLE_INTERVAL / 20))
"""CPU clock ticks a look must find Blender's group to have used to count as working: a
twentieth of a core. A render uses whole cores and a GPU render's waiting threads still
a fair share, while a stuck process may tick once now and then (its interpreter
finishing a line, a timer), which must not keep it alive forever."""
STILL_WORKING_NOTES = 3
"""A Blender that prints nothing but computes is noted in the task's log this many times
per task timeout: the note is progress the manager hears, so its own timeout, which
counts from the last word of the worker, does not fail a render that is only slow."""


@dataclass
class RenderRequest:
    blend_path: Path
    frames: list[int]
    output_dir: Path
    output_format: str | None = None
    resolution_percentage: int | None = None
    samples: int | None = None
    threads: int | None = None
    engine: str | None = None
    file_stem: str = "frame_"
    device: str | None = None
    """Cycles device kind (CPU, CUDA, OPTIX...); None: CPU."""
    gpu: int | None = None
    """Only this GPU of `device` (a worker per GPU); None: all of them."""
    stall_timeout: float | None = None
    """Seconds without a line from Blender *and* without CPU use by its process group,
    after which it is killed as hung (a render that computes is slow, not hung)."""
    path_remap: list[tuple[str, str]] = field(default_factory=list)
    """(from root, to root): absolute paths inside the .blend rewritten at open."""
    tile: dict[str, int] | None = None
    """Render only this tile of the frame (`TileSpec`: column, row of columns x rows, from
    the top left), cropped to it, as PNG (OpenEXR for a still in EXR), without a preview."""
    previews: bool = True
    """A JPEG preview of each frame in `previews/`, for the manager's web UI (never for a
    tile). The tutorial's node asks for none: its output folder holds frames only."""


@dataclass
class RenderResult:
    ok: bool
    frames: dict[int, Path] = field(default_factory=dict)
    """Frames saved and verified."""
    error: str | None = None
    exit_code: int | None = None
    log_tail: list[str] = field(default_factory=list)
    timed_out: bool = False
    """Blender neither said anything nor used CPU for the request's `stall_timeout`, and
    was killed."""
    write_errors: list[OSError] = field(default_factory=list)
    """Files this request could not write, each with its errno and path: a frame or
    preview Blender says it could not save (`blender_write_errors`), the task's log. Facts,
    not a verdict: the worker decides from them whether its own disk is full (it gives the
    task back) or the job is wrong (the task fails), `agent.local_fault`."""


def blender_command(install: BlenderInstall, threads: int | None = None) -> list[str]:
    """The argument list that starts the driver in this Blender (never a shell string)."""
    if install.kind == "module":
        return [install.python, str(DRIVER)]
    assert install.path is not None
    command = [install.path, "-b", "--factory-startup", "-Y", "--python-exit-code", "1"]
    if threads:
        command += ["-t", str(threads)]
    return [*command, "--python", str(DRIVER), "--"]


def open_command(request: RenderRequest) -> dict[str, object]:
    command: dict[str, object] = {"cmd": "open", "blend": str(request.blend_path)}
    if request.path_remap:
        command["remap"] = [list(pair) for pair in request.path_remap]
    return command


def render_command(request: RenderRequest) -> dict[str, object]:
    return {
        "cmd": "render",
        "frames": request.frames,
        "output_dir": str(request.output_dir),
        "file_stem": request.file_stem,
        "output_format": request.output_format,
        "resolution_percentage": request.resolution_percentage,
        "samples": request.samples,
        "threads": request.threads,
        "engine": request.engine,
        "device": request.device,
        "gpu": request.gpu,
        "tile": request.tile,
        "previews": request.previews and request.tile is None,
    }


def describe_duration(seconds: float) -> str:
    """`3 seconds`, `30 minutes`: for a person reading a failure reason."""
    if seconds < 120:
        return f"{seconds:g} seconds"
    return f"{seconds / 60:g} minutes"


def _cut_out_tile(event: FrameSaved) -> None:
    """A tile rendered with an overlap, cut down to the tile in place, losslessly and in
    the format it was rendered in: a PNG with Pillow, an OpenEXR (a still in EXR) with
    every channel and its pixel type kept, and its compression when lossless (a lossy one
    is written as ZIP, once decoded: `worker/exr.write_exr`)."""
    if event.crop is None:
        return
    left, top, width, height = event.crop
    try:
        if event.path.suffix.lower() == ".exr":
            # Here, not at the top: the manager imports this module (`blender_command`
            # for blend-info), and numpy with OpenEXR would cost it 20 MB it never uses.
            from farmhand.worker.exr import crop_exr, read_exr, write_exr

            image = read_exr(event.path)
            _check_rendered_size(image.size, (width, height))
            write_exr(crop_exr(image, left, top, event.width, event.height), event.path)
            return
        with Image.open(event.path) as rendered:
            _check_rendered_size(rendered.size, (width, height))
            tile = rendered.crop((left, top, left + event.width, top + event.height))
        tile.save(event.path, format="PNG")
    except (OSError, ValueError) as error:
        raise ImageError(f"cannot cut the tile out of {event.path.name}: {error}") from error


def _check_rendered_size(rendered: tuple[int, int], asked: tuple[int, int]) -> None:
    """Blender rendered the border it was given (else the cut would take other pixels)."""
    if rendered != asked:
        raise ImageError(
            f"the tile was rendered {rendered[0]}x{rendered[1]}, not {asked[0]}x{asked[1]}"
        )


def _check_frame(event: FrameSaved) -> str | None:
    """Why a saved frame is not a usable output (it, or a File Output node's file), or None."""
    try:
        _cut_out_tile(event)
        verify_image(event.path, event.width, event.height)
        for extra in event.extras:
            verify_image(extra)
    except ImageError as error:
        return f"frame {event.frame}: {error}"
    return None


def _usable_preview(event: FrameSaved) -> FrameSaved:
    """The event, without its preview if that is not a readable image (a preview is a
    convenience: the frame stands without it)."""
    if event.preview is None:
        return event
    try:
        verify_image(event.preview)
    except ImageError:
        return replace(event, preview=None)
    return event


def describe_exit(code: int) -> str:
    if code < 0:
        number = -code
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else ""
        hint = " (out of memory?)" if number == signal.SIGKILL else ""
        return f"Blender was killed by signal {number} {name}{hint}".replace("  ", " ")
    return f"Blender exited with code {code}"


def _blender_error_line(lines: list[str]) -> str | None:
    """The last line in which Blender itself reports an error, if any."""
    for line in reversed(lines):
        stripped = line.strip()
        if stripped.startswith(("Error:", "ERROR", "Traceback")) or "Error: " in stripped:
            return stripped
    return None


_SYSTEM_ERRORS = {
    text: code
    for code in errno.errorcode
    if not (text := os.strerror(code)).startswith("Unknown error")
}
"""The system's error texts (`No space left on device`) and their errno."""
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"")


def blender_write_errors(lines: Iterable[str]) -> list[OSError]:
    """What Blender says it could not write, as OSErrors with errno and path.

    Blender reports a failed save in words, not as an exception farmhand could catch;
    3.4 and 5.x print, for a frame or a preview on a full disk:

        Error: Render error (No space left on device) cannot save: '<path>'
        <path>: No space left on device
        ... Failed to write pixel data to image file "<path>". No space left on device.

    A line that names both a system error's text and an absolute path is read as that
    error about that path. A line without a path (`Could not write image: No space left
    on device`) is left out: it does not say whose disk is full, the worker's (the task
    goes back) or a share a File Output node writes to (the job's: every worker fails).
    """
    found: dict[tuple[int, str], OSError] = {}
    for line in (part for text in lines for part in text.splitlines()):
        for text, code in _SYSTEM_ERRORS.items():
            if text in line:
                for path in _paths_in(line, text):
                    found.setdefault((code, path), OSError(code, text, path))
    return list(found.values())


def _paths_in(line: str, error: str) -> list[str]:
    """The absolute paths `line` names: quoted, or before `: <error>` at its start."""
    quoted = [single or double for single, double in _QUOTED.findall(line)]
    head, said, _ = line.partition(f": {error}")
    named = [*quoted, head.strip()] if said else quoted
    return [path for path in dict.fromkeys(named) if os.path.isabs(path)]


SAVE_FAILURES_KEPT = 20
_SAVE_FAILED = re.compile(
    r"Cannot save Node File Output|Cannot open file for writing|cannot save:"
    r"|Couldn't create directory for file|: (" + "|".join(map(re.escape, _SYSTEM_ERRORS)) + r")$"
)
"""What Blender 3.4 to 5 print when a file cannot be saved (`Cannot save Node File Output
to <p>`, `imb_savepng: Cannot open file for writing: '<p>'`, `<p>: Not a directory`,
`Render error (…) cannot save: '<p>'`, `Couldn't create directory for file <p>: …`)."""


def file_output_failures(lines: Iterable[str], passes_dir: Path) -> list[str]:
    """The lines of `lines` saying a file under `passes_dir` could not be saved: a File
    Output node's pass (the driver puts every one there). Blender renders on and reports
    the frame saved, so without this the task completed with the pass silently missing
    (QA round 13)."""
    where = str(passes_dir) + os.sep
    return [line for line in lines if where in line]


class _Listener:
    """Where one request's output goes: its log file, its callbacks, its log tail.

    A session's Blender outlives a task, but each task has its own log and callbacks, so
    the reader hands lines to whichever listener is attached at the moment.

    The log file is the worker's own copy, on the worker's disk: a write to it that fails
    (a full disk) is kept as `log_error` and the file is written no more, but the line
    still goes on to the callbacks and events. Raised, it would end the thread reading
    Blender's output, and the request would never hear of its frames or its end.
    """

    def __init__(
        self, log_path: Path, on_event: Callable[[Event], None], on_log: Callable[[str], None]
    ) -> None:
        self.log_path = log_path
        self.log_error: OSError | None = None
        """The first write to the log file that failed; None while it is whole."""
        self.log: IO[str] | None = None
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log = log_path.open("a", encoding="utf-8", errors="replace")
        except OSError as exc:
            self._log_failed(exc)
        self.on_event = on_event
        self.on_log = on_log
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self.last_line = time.monotonic()
        """When Blender last said anything (a silent Blender that computes nothing is a
        hung one)."""
        self.last_note = self.last_line
        """When farmhand last noted that a silent Blender is still computing."""
        self.save_failures: list[str] = []
        """Lines in which Blender said it could not save a file (the first few): a File
        Output node's pass that failed does not fail the render, and its line may be
        long gone from the tail by the render's end (`file_output_failures`)."""

    def line(self, line: str) -> None:
        self.last_line = time.monotonic()
        if len(self.save_failures) < SAVE_FAILURES_KEPT and _SAVE_FAILED.search(line):
            self.save_failures.append(line)
        self._keep(line)
        event = parse_event_line(line)
        if event is None:
            self._log(line)
            event = parse_progress_line(line)
        elif isinstance(event, DriverError):
            self._log(f"Error: {event.message}")
        if event is not None:
            try:
                self.on_event(event)
            except Exception as exc:
                # The reader must keep draining Blender's output, or Blender blocks on a
                # full pipe and the render never ends.
                self._log(f"farmhand: event handler failed: {exc!r}")

    def note(self, line: str) -> None:
        """A line of farmhand's own about this Blender (start, reuse), for the task log."""
        self._keep(line)
        self._log(line)

    def _keep(self, line: str) -> None:
        """Append a line to the log file, unless a write to it failed before."""
        if self.log is None:
            return
        try:
            self.log.write(line + "\n")
            self.log.flush()
        except OSError as exc:
            self._log_failed(exc)
            self._close_log()

    def _log_failed(self, exc: OSError) -> None:
        """Note the failed write, naming the log file (a failed flush names no file)."""
        if self.log_error is None:
            self.log_error = OSError(exc.errno, exc.strerror or str(exc), str(self.log_path))

    def _log(self, line: str) -> None:
        self.tail.append(line)
        try:
            self.on_log(line)
        except Exception:  # see line(): never stop draining the pipe
            self.on_log = lambda _line: None

    def _close_log(self) -> None:
        log_file, self.log = self.log, None
        if log_file is not None:
            try:
                log_file.close()
            except OSError as exc:  # the last lines could not be flushed
                self._log_failed(exc)

    def close(self) -> None:
        self._close_log()


class _Reader(threading.Thread):
    """Reads Blender's merged output for its whole life and passes each line on.

    Lines that come while no request listens (Blender's banner before the first one is
    attached) wait and go to the next listener, so no task log misses them.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True, name="blender-output")
        self.stream = stream
        self._lock = threading.Lock()
        self._listener: _Listener | None = None
        self._pending: deque[str] = deque(maxlen=1000)

    def attach(self, listener: _Listener | None) -> None:
        with self._lock:
            self._listener = listener
            if listener is not None:
                while self._pending:
                    listener.line(self._pending.popleft())

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                continue
            with self._lock:
                if self._listener is None:
                    self._pending.append(line)
                    continue
                try:
                    self._listener.line(line)
                except Exception:
                    # Never end here: a reader gone is a request that waits for ever for
                    # an answer Blender already gave (and a Blender blocked on its pipe).
                    log.exception("a line of Blender's output was not handled", line=line)


@dataclass
class _Outcome:
    """What one request saw, judged by `_judge` once it is over."""

    frames: dict[int, Path] = field(default_factory=dict)
    bad_frames: dict[int, str] = field(default_factory=dict)
    errors: list[DriverError] = field(default_factory=list)
    terminal: queue.Queue[Event] = field(default_factory=queue.Queue)
    stalled: bool = False
    engine: str | None = None
    """The engine the file renders with (from `opened`), for the EEVEE hint."""
    frame_peak: int = 0
    """Peak resident bytes of Blender's group since the current frame started."""


class BlenderProcess:
    """One running Blender with the driver, rendering requests one after another.

    Not thread-safe: one request at a time. `kill()` may be called from any thread.
    Raises OSError if Blender cannot be started. With `pid_files`, the running Blender
    has a pid file there (swept by the next run of a worker that crashed).
    """

    def __init__(
        self,
        install: BlenderInstall,
        threads: int | None = None,
        pid_files: PidFiles | None = None,
    ) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        mark = PidFiles.new_mark()
        env[MARK_VARIABLE] = mark
        self.command = blender_command(install, threads)
        self.threads = threads
        self.process = spawn(self.command, env)
        self._pid_files = pid_files
        if pid_files is not None:
            pid_files.record(self.process.pid, mark)
        assert self.process.stdout is not None and self.process.stdin is not None
        self.blend: Path | None = None
        """The .blend the driver has open (None until an `open` succeeded)."""
        self.frames_rendered = 0
        self.requests = 0
        self._listener: _Listener | None = None
        self._stall_timeout: float | None = None
        self._cpu_ticks = 0
        """CPU time of Blender's process group at the last look, in clock ticks."""
        self._computed_at = time.monotonic()
        """When that CPU time was last seen to grow (Blender is working, if silently)."""
        self._reader = _Reader(self.process.stdout)
        self._reader.start()
        # Commands are written from a thread of their own: a long frame list fills the
        # pipe until Blender has opened the file and reads on, and a cancel must not
        # wait for that.
        self._commands: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(
            target=_write_commands,
            args=(self.process.stdin, self._commands),
            daemon=True,
            name="blender-in",
        ).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of Blender's process group (Blender and anything it started)."""
        return group_rss_bytes(self.process.pid)

    def run(
        self,
        request: RenderRequest,
        *,
        log_path: Path,
        on_event: Callable[[Event], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_frame_ready: Callable[[int, Path], None] | None = None,
        cancel: threading.Event | None = None,
        last: bool = False,
        notes: Sequence[str] = (),
    ) -> RenderResult:
        """Render `request` in this Blender; block until done, failed or `cancel` is set.

        The file is opened only if it is not the one already open. With `last`, Blender
        is then told to quit and its exit code is part of the verdict (one-shot renders).
        `notes` go to the task log first (what farmhand did with this Blender).
        After a cancel the process group is gone.
        """
        cancel = cancel or threading.Event()
        request.output_dir.mkdir(parents=True, exist_ok=True)
        seen = _Outcome()

        def handle(event: Event) -> None:
            if isinstance(event, FrameStarted):
                seen.frame_peak = self.rss_bytes()
            if isinstance(event, Opened):
                seen.engine = str(event.facts.get("engine") or "") or None
            if isinstance(event, FrameSaved):
                # Checked the moment it is written, so it is uploaded while the next renders.
                # Listeners hear of it (stats, preview, File Output files) before it is
                # handed on for upload, so those go with the frame.
                problem = _check_frame(event)
                if problem is not None:
                    seen.bad_frames[event.frame] = problem
                    if on_event is not None:
                        on_event(event)
                    return
                seen.frames[event.frame] = event.path
                if on_event is not None:
                    peak = max(seen.frame_peak, self.rss_bytes())
                    on_event(FrameStats(event.frame, event.seconds, peak))
                    on_event(_usable_preview(event))
                if on_frame_ready is not None:
                    on_frame_ready(event.frame, event.path)
                return
            if isinstance(event, DriverError):
                seen.errors.append(event)
            if on_event is not None:
                on_event(event)
            if isinstance(event, Opened | RenderDone | DriverError):
                seen.terminal.put(event)

        listener = _Listener(log_path, handle, on_log or (lambda _line: None))
        self._listener = listener
        self._stall_timeout = request.stall_timeout
        for note in notes:
            listener.note(note)
        self._reader.attach(listener)
        self.requests += 1
        canceled = False
        try:
            answer: Event | None = None
            if self.blend != request.blend_path:
                self.blend = None
                answer, canceled = self._exchange(open_command(request), seen, cancel)
                if isinstance(answer, Opened):
                    self.blend = request.blend_path
            if self.blend is not None and not canceled:
                answer, canceled = self._exchange(render_command(request), seen, cancel)
            if last and not canceled:
                self._commands.put(json.dumps({"cmd": "quit"}).encode() + b"\n")
                self._commands.put(None)
                canceled = _wait(self.process, cancel)
            if not self.alive:
                # Everything Blender printed before it ended belongs to this request.
                self._reader.join(timeout=10)
        finally:
            self._reader.attach(None)
            listener.close()
        self.frames_rendered += len(seen.frames)
        code = self.process.poll()
        tail = list(listener.tail)
        if seen.stalled:
            timeout = describe_duration(request.stall_timeout or 0)
            reason = (
                f"no output and no CPU use for {timeout} (task timeout): "
                "Blender hung and was killed"
            )
            return RenderResult(False, seen.frames, reason, code, [*tail, reason], timed_out=True)
        if canceled:
            return RenderResult(False, {}, "canceled", code, tail)
        # A session's Blender that ends after answering (it is recycled before the next
        # request) did not spoil this request; one that ends before answering did.
        verdict = _judge(request, seen, code if last or answer is None else None, tail)
        verdict.exit_code = code
        lost = file_output_failures(listener.save_failures, request.output_dir / "passes")
        if verdict.ok and lost:
            # The scene's pass is part of what the task must deliver: failed, as a frame
            # that could not be saved is (or given back, if it is this machine's disk).
            verdict.ok = False
            said = next((line for line in lost if blender_write_errors([line])), lost[-1])
            verdict.error = f"a File Output node's file could not be saved: {said}"
            verdict.log_tail = [*tail, *lost[-3:]]
            verdict.write_errors = blender_write_errors(lost)
        elif not verdict.ok:
            verdict.write_errors = blender_write_errors([verdict.error or "", *tail])
        if listener.log_error is not None:
            verdict.write_errors.append(listener.log_error)
        return verdict

    def ask(
        self,
        command: dict[str, object],
        *,
        log_path: Path,
        on_log: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Event | None:
        """Send one command that renders nothing (`open`, `display`) and wait for its
        answer: the driver's event for it (`Opened`, `Displayed`) or a `DriverError`;
        None when Blender ended first or `cancel` was set (its process group is then
        gone). Blender's output meanwhile goes to `log_path` and `on_log`, as a render's
        does; no task timeout applies (the caller's cancel ends a wait)."""
        cancel = cancel or threading.Event()
        seen = _Outcome()

        def handle(event: Event) -> None:
            if isinstance(event, Opened | Displayed | DriverError):
                seen.terminal.put(event)

        listener = _Listener(log_path, handle, on_log or (lambda _line: None))
        self._listener = listener
        self._stall_timeout = None
        self._reader.attach(listener)
        self.requests += 1
        try:
            answer, _canceled = self._exchange(command, seen, cancel)
        finally:
            self._reader.attach(None)
            listener.close()
        if command.get("cmd") == "open":
            self.blend = Path(str(command["blend"])) if isinstance(answer, Opened) else None
        return answer

    def _exchange(
        self, command: dict[str, object], seen: _Outcome, cancel: threading.Event
    ) -> tuple[Event | None, bool]:
        """Send one command and wait for its answer: (the answer or None if Blender
        ended first, whether it was canceled)."""
        self._commands.put(json.dumps(command).encode() + b"\n")
        sampled = 0.0
        while True:
            try:
                return seen.terminal.get(timeout=0.1), False
            except queue.Empty:
                pass
            if cancel.is_set():
                kill_group(self.process)
                return None, True
            now = time.monotonic()
            if now - sampled >= MEMORY_SAMPLE_INTERVAL:
                sampled = now
                rss, ticks = group_usage(self.process.pid)
                seen.frame_peak = max(seen.frame_peak, rss)
                # The first look only sets the mark: it counts Blender's start-up too,
                # which came before the lines it printed since.
                if self._cpu_ticks and ticks - self._cpu_ticks >= WORKING_TICKS:
                    self._computed_at = now
                self._cpu_ticks = ticks
            listener = self._listener
            stall = self._stall_timeout
            if stall and listener is not None and self._hung(listener, stall, now):
                seen.stalled = True
                kill_group(self.process)
                return None, True
            if not self.alive:
                self._reader.join(timeout=10)
                try:
                    return seen.terminal.get_nowait(), False
                except queue.Empty:
                    return None, False

    def _hung(self, listener: _Listener, stall: float, now: float) -> bool:
        """Has Blender neither printed a line nor used any CPU for `stall` seconds?

        Silence alone is not a hang: Cycles without adaptive sampling prints its progress
        every few thousand samples, which on a heavy frame can be hours apart. What a hung
        Blender (a deadlock, a wait on a dead network share, a stopped process) does not
        do is compute, so any growth of its process group's CPU time counts as work. That
        includes a GPU render, whose CPU threads still tick while they wait on the GPU:
        it is the price of never killing a slow render as hung that a Blender stuck in
        an endless loop, or a GPU hang that keeps a CPU thread polling, is not caught here
        (the job's owner sees it still running and cancels it). Without Linux's /proc
        the CPU time reads 0 and only silence counts, as before.

        A Blender that is silent but computing gets a line in the task's log every
        `stall / STILL_WORKING_NOTES`: a person sees why it is left running, and the
        manager, which fails a task it hears nothing of for its task timeout, hears of it.
        """
        if now - max(listener.last_line, self._computed_at) > stall:
            return True
        silent = now - listener.last_line
        every = stall / STILL_WORKING_NOTES
        noted = max(listener.last_line, listener.last_note)
        # Growth seen a whole look after the last line or note happened after it.
        computed = self._computed_at - MEMORY_SAMPLE_INTERVAL >= noted
        if silent > every and now - noted > every and computed:
            listener.last_note = now
            listener.note(
                f"farmhand: no output from Blender for {describe_duration(round(silent))}, "
                "but it is using CPU: still working, not hung"
            )
        return False

    def close(self, grace: float = KILL_GRACE) -> None:
        """Ask Blender to quit; kill its process group if it has not within `grace`."""
        if self.alive:
            self._commands.put(json.dumps({"cmd": "quit"}).encode() + b"\n")
            self._commands.put(None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """Kill the process group now (also reaps anything Blender left behind)."""
        kill_group(self.process)
        self._reader.join(timeout=5)
        if self._pid_files is not None and self.process.poll() is not None:
            self._pid_files.forget(self.process.pid)


def render(
    install: BlenderInstall,
    request: RenderRequest,
    *,
    log_path: Path,
    on_event: Callable[[Event], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    on_frame_ready: Callable[[int, Path], None] | None = None,
    cancel: threading.Event | None = None,
    pid_files: PidFiles | None = None,
) -> RenderResult:
    """Render `request` in a fresh Blender and block until it ends or `cancel` is set.

    `on_frame_ready(frame, path)` is called for each frame as soon as it is written and
    verified; callbacks run on the thread reading Blender's output and must be quick.
    """
    try:
        blender = BlenderProcess(install, request.threads, pid_files)
    except OSError as exc:
        return start_failure(install, request.threads, exc)
    try:
        return blender.run(
            request,
            log_path=log_path,
            on_event=on_event,
            on_log=on_log,
            on_frame_ready=on_frame_ready,
            cancel=cancel,
            last=True,
        )
    finally:
        blender.kill()


def start_failure(install: BlenderInstall, threads: int | None, exc: OSError) -> RenderResult:
    """A Blender that was there at discovery can be gone or broken now: a failed render
    with the reason, not an exception that takes the worker down."""
    command = blender_command(install, threads)
    reason = f"cannot start Blender ({command[0]}): {exc.strerror or exc}"
    return RenderResult(False, {}, reason, None, [reason])


def _judge(
    request: RenderRequest, seen: _Outcome, code: int | None, tail: list[str]
) -> RenderResult:
    """The verdict on one request. `code` is None while Blender lives on (a session)."""
    problems = [
        seen.bad_frames.get(frame, f"missing output for frame {frame}")
        for frame in request.frames
        if frame not in seen.frames
    ]
    error: str | None = None
    if seen.errors:
        error = seen.errors[0].message
    elif code is not None and code != 0:
        detail = _blender_error_line(tail)
        error = describe_exit(code) + (f": {detail}" if detail and code > 0 else "")
    elif problems:
        detail = _blender_error_line(tail)
        error = problems[0] + (f" ({detail})" if detail else "")
    engine = request.engine or seen.engine or ""
    if error is not None and engine.startswith("BLENDER_EEVEE") and _gpu_trouble(code, error):
        error += f" ({EEVEE_HINT})"
    return RenderResult(error is None, seen.frames, error, code, tail)


EEVEE_HINT = (
    "EEVEE needs OpenGL: on a worker without a GPU driver or EGL (Mesa) it cannot render; "
    "render this job with Cycles or Workbench, or require a worker tag that has a GPU"
)
_GPU_WORDS = ("EGL", "OpenGL", "GPU", "GL_", "glx", "display")


def _gpu_trouble(code: int | None, error: str) -> bool:
    """Did an EEVEE render fail the way it does without a usable OpenGL: a crash (not
    SIGKILL, which is memory), or a failure that names EGL/OpenGL/the GPU/the display?

    Only the failure itself counts: Blender 5 logs EGL warnings even when EEVEE works.
    """
    crashed = code is not None and code < 0 and code != -signal.SIGKILL
    return crashed or any(word in error for word in _GPU_WORDS)


def _write_commands(stdin: IO[bytes], commands: queue.Queue[bytes | None]) -> None:
    try:
        while (payload := commands.get()) is not None:
            stdin.write(payload)
            stdin.flush()
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # Blender ended (or was killed) first; its exit code and log say why


def _wait(process: subprocess.Popen[bytes], cancel: threading.Event) -> bool:
    """Wait for Blender to end; if `cancel` is set first, kill its group. True if canceled."""
    while True:
        try:
            process.wait(timeout=0.1)
            return cancel.is_set()
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                kill_group(process)
                return True


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM Blender's process group, then SIGKILL what is left of it after a grace.

    What is left, not only Blender: a child of Blender's (a wrapper's, a script's
    helper) that ignores SIGTERM outlives a Blender that obeyed it, and would go on
    using the machine after its task was stopped."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE)
    while _live_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _live_members(process.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10.0)


def _live_members(pgid: int) -> bool:
    """Whether group `pgid` has a process that is not a zombie (one that has ended and
    waits for its parent: signals cannot end it again)."""
    return any(fields[0] != "Z" for _, fields in group_members(pgid))


def group_rss_bytes(pgid: int, proc: Path = Path("/proc")) -> int:
    """Sum of VmRSS over the processes of group `pgid` (0 where /proc is not Linux's).

    The group, not just the pid: Blender's children (and, for the bpy module, nothing
    else) count against a session's memory limit too.
    """
    return group_usage(pgid, proc)[0]


def group_usage(pgid: int, proc: Path = Path("/proc")) -> tuple[int, int]:
    """(resident bytes, CPU clock ticks) of the processes of group `pgid`, in one look
    at /proc; (0, 0) where /proc is not Linux's.

    CPU time is user and system time, with that of children already reaped: it only
    grows while the group works (a member that ends unreaped takes its share away, so
    callers count growth, not change).
    """
    rss = ticks = 0
    for entry, fields in group_members(pgid, proc):
        try:
            # utime stime cutime cstime: fields 14-17 of proc(5), 11-14 after comm.
            cpu = sum(int(value) for value in fields[11:15])
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                    break
            ticks += cpu
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return rss, ticks
