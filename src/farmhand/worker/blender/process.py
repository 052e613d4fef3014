"""Run one Blender for one render request, and decide honestly whether it worked.

Blender can exit 0 after failing (a missing camera is an error *message*), and a killed
Blender leaves half-written files. So success here means all of: the process exited 0,
the driver reported no error, and every expected frame exists and is a complete image
of the expected size. Anything else is a failure with one line a person can act on.

Blender runs in its own process group, so canceling kills it and anything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from farmhand.shared.images import ImageError, verify_image
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import (
    DriverError,
    Event,
    FrameSaved,
    parse_event_line,
    parse_progress_line,
)

DRIVER = Path(__file__).with_name("driver.py")
KILL_GRACE = 3.0
LOG_TAIL = 50


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


@dataclass
class RenderResult:
    ok: bool
    frames: dict[int, Path] = field(default_factory=dict)
    """Frames saved and verified."""
    error: str | None = None
    exit_code: int | None = None
    log_tail: list[str] = field(default_factory=list)


def blender_command(install: BlenderInstall, threads: int | None = None) -> list[str]:
    """The argument list that starts the driver in this Blender (never a shell string)."""
    if install.kind == "module":
        return [install.python, str(DRIVER)]
    assert install.path is not None
    command = [install.path, "-b", "--factory-startup", "-Y", "--python-exit-code", "1"]
    if threads:
        command += ["-t", str(threads)]
    return [*command, "--python", str(DRIVER), "--"]


def commands_for(request: RenderRequest) -> list[dict[str, object]]:
    return [
        {"cmd": "open", "blend": str(request.blend_path)},
        {
            "cmd": "render",
            "frames": request.frames,
            "output_dir": str(request.output_dir),
            "file_stem": request.file_stem,
            "output_format": request.output_format,
            "resolution_percentage": request.resolution_percentage,
            "samples": request.samples,
            "threads": request.threads,
            "engine": request.engine,
        },
        {"cmd": "quit"},
    ]


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


class _Reader(threading.Thread):
    """Reads Blender's merged output: every line to the log, events to the caller."""

    def __init__(
        self,
        stream: object,
        log_path: Path,
        on_event: Callable[[Event], None],
        on_log: Callable[[str], None],
    ) -> None:
        super().__init__(daemon=True, name="blender-output")
        self.stream = stream
        self.log_path = log_path
        self.on_event = on_event
        self.on_log = on_log
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)

    def run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8", errors="replace") as log:
            for raw in self.stream:  # type: ignore[attr-defined]
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line:
                    continue
                log.write(line + "\n")
                log.flush()
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
                        # This thread must keep draining Blender's output, or Blender
                        # blocks on a full pipe and the render never ends.
                        self._log(f"farmhand: event handler failed: {exc!r}")

    def _log(self, line: str) -> None:
        self.tail.append(line)
        try:
            self.on_log(line)
        except Exception:  # see run(): never stop draining the pipe
            self.on_log = lambda _line: None


def render(
    install: BlenderInstall,
    request: RenderRequest,
    *,
    log_path: Path,
    on_event: Callable[[Event], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    on_frame_ready: Callable[[int, Path], None] | None = None,
    cancel: threading.Event | None = None,
) -> RenderResult:
    """Render `request` in a fresh Blender and block until it ends or `cancel` is set.

    `on_frame_ready(frame, path)` is called for each frame as soon as it is written and
    verified; callbacks run on the thread reading Blender's output and must be quick.
    """
    cancel = cancel or threading.Event()
    request.output_dir.mkdir(parents=True, exist_ok=True)
    frames: dict[int, Path] = {}
    bad_frames: dict[int, str] = {}
    errors: list[DriverError] = []

    def handle(event: Event) -> None:
        if isinstance(event, FrameSaved):
            # Checked the moment it is written, so it can be uploaded while the next renders.
            try:
                verify_image(event.path, event.width, event.height)
            except ImageError as error:
                bad_frames[event.frame] = f"frame {event.frame}: {error}"
            else:
                frames[event.frame] = event.path
                if on_frame_ready is not None:
                    on_frame_ready(event.frame, event.path)
        elif isinstance(event, DriverError):
            errors.append(event)
        if on_event is not None:
            on_event(event)

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    command = blender_command(install, request.threads)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        # A Blender that was there at discovery can be gone or broken now: a failed
        # render with the reason, not an exception that takes the worker down.
        reason = f"cannot start Blender ({command[0]}): {exc.strerror or exc}"
        return RenderResult(False, {}, reason, None, [reason])
    reader = _Reader(process.stdout, log_path, handle, on_log or (lambda _line: None))
    reader.start()
    assert process.stdin is not None
    payload = "".join(json.dumps(command) + "\n" for command in commands_for(request)).encode()
    # Written from a thread: a long frame list fills the pipe until Blender has opened the
    # file and reads on, and a cancel must not wait for that.
    threading.Thread(
        target=_write_commands, args=(process.stdin, payload), daemon=True, name="blender-in"
    ).start()

    canceled = _wait(process, cancel)
    reader.join(timeout=10)
    tail = list(reader.tail)
    code = process.returncode
    if canceled:
        return RenderResult(False, {}, "canceled", code, tail)

    problems = [
        bad_frames.get(frame, f"missing output for frame {frame}")
        for frame in request.frames
        if frame not in frames
    ]

    error: str | None = None
    if errors:
        error = errors[0].message
    elif code != 0:
        detail = _blender_error_line(tail)
        error = describe_exit(code) + (f": {detail}" if detail and code > 0 else "")
    elif problems:
        detail = _blender_error_line(tail)
        error = problems[0] + (f" ({detail})" if detail else "")
    return RenderResult(error is None, frames, error, code, tail)


def _write_commands(stdin: IO[bytes], payload: bytes) -> None:
    try:
        stdin.write(payload)
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
    """SIGTERM Blender's process group, then SIGKILL if it is still there after a grace."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
