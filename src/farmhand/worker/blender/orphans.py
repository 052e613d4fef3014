"""No Blender outlives its worker: it dies with it, and what an earlier run left is killed.

A worker killed with SIGKILL runs no cleanup. Its Blender, in a process group of its own
(so a cancel can kill it and what it started), was re-parented to init and kept
rendering at full CPU (on a GPU it would hold the card's memory), while the restarted
worker took the same task and rendered it a second time beside it. Two ends close that:

- `spawn` starts Blender so that Linux kills it (SIGKILL) the moment the worker dies
  (`PR_SET_PDEATHSIG`, set in the child between fork and exec). Linux sends that signal
  when the *thread* that forked the child ends, not the process, and a session's
  Blender is started from the render thread of whichever task came first, which ends
  with that task; so every Blender is forked by one spawner thread that lives as long
  as the worker.
- `PidFiles` writes a file per running Blender (its pid and start time, the worker's
  pid and start time, the boot, a mark in Blender's environment), and `sweep`, run
  when a worker starts, kills the process group of every Blender whose worker is gone.
  It covers what the signal cannot: a Blender started through a wrapper script (the
  wrapper gets the signal, the real Blender in its group does not) and the instant
  between fork and the `prctl`. Both need Linux (`prctl`, /proc): elsewhere no file is
  written and nothing is swept. A pid is only ever killed when it is provably
  the recorded Blender: same start time since the same boot, or, once the recorded
  Blender itself is gone, a member of its group that carries its mark.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.worker.blender.procfs import PROC, group_members, stat_fields

log: FilteringBoundLogger = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1
MARK_VARIABLE = "FARMHAND_BLENDER_MARK"
"""Set in each Blender's environment (and so in anything it starts) to its pid file's
mark: how a sweep knows a process in a recorded group is that Blender's."""


# ------------------------------------------------------------------ dying with the worker


def _die_with_parent() -> Callable[[], None] | None:
    """A function for `preexec_fn` that makes the child get SIGKILL when its parent
    thread ends; None where there is no `prctl` (not Linux).

    `prctl` is looked up here, in the parent: the child, between fork and exec, only
    calls it. `PyDLL` keeps the GIL during the call (the forked child has one thread and
    must not hand the GIL around). If the worker died before the `prctl`, the signal
    would never come: the child sees it has been re-parented and does not exec Blender.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.PyDLL(None).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _Spawner:
    """One thread that forks every Blender and lives as long as the worker (see module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._requests: queue.Queue[tuple[dict[str, Any], Future[subprocess.Popen[bytes]]]] = (
            queue.Queue()
        )

    def popen(self, **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="blender-spawner", daemon=True
                )
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((kwargs, done))
        return done.result()

    def _run(self) -> None:
        while True:
            kwargs, done = self._requests.get()
            try:
                # Looked up per spawn: the pid is that of the process forking now.
                preexec = _die_with_parent()
                done.set_result(subprocess.Popen(preexec_fn=preexec, **kwargs))
            except BaseException as exc:  # handed to the thread that asked
                done.set_exception(exc)


_SPAWNER = _Spawner()


def spawn(command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start Blender with pipes for stdin and (merged) output, in a process group of
    its own, to be killed by Linux when this worker dies. Raises OSError as Popen does."""
    return _SPAWNER.popen(
        args=list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


def run_briefly(
    command: Sequence[str],
    *,
    timeout: float,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`subprocess.run` for a short call of Blender (its version, its devices): started
    as `spawn` starts a render, so a worker killed meanwhile takes it along instead of
    leaving it to run out its timeout, and at the timeout its whole process group is
    killed, not Blender's own pid alone. Raises OSError and TimeoutExpired as `run` does."""
    process = _SPAWNER.popen(
        args=list(command),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


# ------------------------------------------------------------- what an earlier run left


def start_time(pid: int, proc: Path = PROC) -> int | None:
    """When `pid` started, in clock ticks since boot (proc(5) stat field 22); None if
    there is no such process, it has ended and waits to be reaped (a zombie: nothing to
    kill), or there is no /proc. A pid and its start time name one process."""
    try:
        fields = stat_fields(proc / str(pid))
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id(proc: Path = PROC) -> str:
    """This boot (start times count from it); '' where it cannot be read."""
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def default_pid_dir() -> Path:
    """Where a worker records its Blenders when it is not told: per user, since any of
    the user's workers may sweep what a dead one left (a live worker's are spared)."""
    return Path(tempfile.gettempdir()) / f"farmhand-{os.getuid()}" / "blenders"


@dataclass(frozen=True)
class Record:
    """One running Blender, as written to its pid file."""

    pid: int
    start: int
    mark: str
    owner: int
    owner_start: int
    boot: str


class PidFiles:
    """The pid files of this worker's Blenders, one per running Blender."""

    def __init__(self, directory: Path, proc: Path = PROC) -> None:
        self.directory = directory
        self.proc = proc

    @staticmethod
    def new_mark() -> str:
        return uuid.uuid4().hex

    def usable(self) -> bool:
        """Make the directory (mode 0700) and check it is ours: a file planted by someone
        else must never tell a sweep what to kill."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = self.directory.lstat()
        except OSError as exc:
            log.warning(
                "cannot keep Blender pid files", directory=str(self.directory), error=str(exc)
            )
            return False
        if info.st_uid != os.getuid() or info.st_mode & 0o077 or not self.directory.is_dir():
            log.warning(
                "Blender pid file directory is not this user's alone; not used",
                directory=str(self.directory),
            )
            return False
        return True

    def record(self, pid: int, mark: str) -> None:
        """Write `pid`'s file (atomically); a failure is logged, not raised: the Blender
        runs on, it would only not be swept after a crash."""
        start = start_time(pid, self.proc)
        me = os.getpid()
        my_start = start_time(me, self.proc)
        if start is None or my_start is None or not self.usable():
            return
        record = Record(pid, start, mark, me, my_start, boot_id(self.proc))
        path = self._path(pid)
        try:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(record.__dict__))
            temporary.replace(path)
        except OSError as exc:
            log.warning("cannot write a Blender pid file", path=str(path), error=str(exc))

    def forget(self, pid: int) -> None:
        """`pid` has ended (and was reaped): its file goes."""
        self._path(pid).unlink(missing_ok=True)

    def _path(self, pid: int) -> Path:
        return self.directory / f"blender-{pid}.json"

    def sweep(self) -> list[int]:
        """Kill (SIGKILL) the process group of each recorded Blender whose worker is gone,
        and drop the files of those that are gone; the pids killed, each one logged.

        Spared: a Blender whose worker still runs (another worker sharing the directory),
        and any process that is not provably the recorded one (a reused pid)."""
        killed: list[int] = []
        if not self.directory.is_dir() or not self.usable():
            return killed
        boot = boot_id(self.proc)
        for path in sorted(self.directory.glob("blender-*.json")):
            try:
                record = Record(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if record.boot == boot and start_time(record.owner, self.proc) == record.owner_start:
                continue  # its worker runs: its Blender is no orphan
            if record.boot == boot and self._kill_orphan(record):
                killed.append(record.pid)
            path.unlink(missing_ok=True)
        return killed

    def _kill_orphan(self, record: Record) -> bool:
        """Kill `record`'s group if it is provably still that Blender's; True if killed."""
        start = start_time(record.pid, self.proc)
        if start is not None and start != record.start:
            # The pid is another process's now; a pid in use as a group id is never
            # handed out again, so nothing of the recorded group is left either.
            return False
        if start is None and not self._members_with_mark(record):
            return False  # the Blender and everything in its group are gone
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        log.warning(
            "killed a Blender left running by an earlier run of this worker",
            pid=record.pid,
            worker_pid=record.owner,
            leader_alive=start is not None,
        )
        return True

    def _members_with_mark(self, record: Record) -> bool:
        """Is a process of group `record.pid` left that carries the recorded mark (the
        Blender is gone, something it started, a wrapper's Blender, is not)?"""
        marker = f"{MARK_VARIABLE}={record.mark}".encode()
        for entry, fields in group_members(record.pid, self.proc):
            if fields[0] in ("Z", "X"):
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    return True
            except OSError:
                continue
        return False
