"""Task logs: append-only text files under `<data_dir>/logs/job-<id>/task-<id>.log`.

Logs grow to megabytes for long renders and are read rarely, so they live beside the
blob store rather than in the database.

Every progress report of every worker brings log lines. Appending them is a few system
calls, but on the event loop those would stall every other request, and a thread hand-off
per report costs more than the write. So `append` only queues the lines; one writer
thread appends them, in order. Whoever reads a log (`read`) or removes one first waits
for what is queued (`flush`), so nobody sees a log without lines already accepted.

A write that fails (a full disk, a read-only or unwritable data dir) loses its own
lines, not those that follow: each later write is tried as if nothing had happened, so
lines accepted once the fault clears land in their files. While it lasts every progress
report of every worker fails so, and a log line each flooded the manager's log. The
losses are said as the API's storage refusals are (`log_throttle`): the first at once,
then at most one line a minute with how many lines and writes were lost since, naming
the latest log that lost them; the first write that goes through after such a line
says so, once.

A job's logs are found by its id alone, so a log folder must never outlive its job: deleting
a job removes it, and at start the folders of jobs the database does not have (a
database restored from a backup older than the logs, or replaced) are moved aside
(`set_aside_stale`), so a new job given such an id never shows another job's log.

A log is what a render printed (file paths, scene names, the job's errors): only the
manager's account reads it. Logs are created 0600 in folders made 0700; `make_private`
tightens those an earlier version left readable to others.
"""

from __future__ import annotations

import os
import queue
import re
import stat
import threading
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path

import structlog

from farmhand.manager.log_throttle import LogThrottle

log = structlog.get_logger(__name__)

MAX_LINE = 4000
_JOB_FOLDER = re.compile(r"job-([0-9]{1,18})")


_Item = tuple[Path, list[str]] | threading.Event | None
_LOST = "task-log-lines-lost"
"""The kind of fault `LogThrottle` counts a failed write under."""


class TaskLogs:
    def __init__(self, root: Path, losses: LogThrottle | None = None) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item] | None = None
        """The running writer's queue; None while stopped. Each writer has a queue of its
        own, so one that is stopping never shares work with its successor."""
        self._thread: threading.Thread | None = None
        """The latest writer (running, stopping or stopped)."""
        self._losses = LogThrottle() if losses is None else losses
        """When to say lost lines (the module's docstring; a test may pass one with its
        own clock); only writers use it, one at a time."""

    def path_for(self, job_id: int, task_id: int) -> Path:
        return self.root / f"job-{job_id}" / f"task-{task_id}.log"

    def append(self, job_id: int, task_id: int, lines: list[str]) -> None:
        """Queue `lines` for the task's log (returns at once; see the module docstring)."""
        if not lines:
            return
        item = (self.path_for(job_id, task_id), list(lines))
        with self._lock:
            self._running().put(item)

    def flush(self) -> None:
        """Wait until every line queued before this call is in its file."""
        written = threading.Event()
        with self._lock:
            if self._queue is None:
                return
            self._queue.put(written)
        written.wait()

    def read(self, job_id: int, task_id: int) -> str:
        self.flush()
        path = self.path_for(job_id, task_id)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Write what is queued and stop the writer thread (a later append restarts it)."""
        with self._lock:
            thread, work = self._thread, self._queue
            self._queue = None
            if work is not None:
                work.put(None)
        if thread is not None and work is not None:
            thread.join()

    def _running(self) -> queue.SimpleQueue[_Item]:
        """The current writer's queue, starting a writer if there is none (under the lock)."""
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            # A writer started after a close first lets its predecessor finish, so the
            # lines of one task stay in order across the restart.
            self._thread = threading.Thread(
                target=self._serve,
                args=(self._queue, self._thread),
                name="farmhand-task-logs",
                daemon=True,
            )
            self._thread.start()
        return self._queue

    def _serve(self, work: queue.SimpleQueue[_Item], predecessor: threading.Thread | None) -> None:
        if predecessor is not None:
            predecessor.join()
        while True:
            item = work.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            path, lines = item
            try:
                _write(path, lines)
            except Exception as error:  # a full disk must not stop the logs that follow
                self._lost(path, lines, error)
            else:
                self._written(path)

    def _lost(self, path: Path, lines: list[str], error: Exception) -> None:
        """Say lost lines as `LogThrottle` allows: `lines_lost` and `writes_lost` count
        those since the last line said, these included; `path` and `error` are these."""
        due = self._losses.occurred(_LOST, lines=len(lines), writes=1)
        if due is not None:
            log.error(
                "task log lines lost",
                path=str(path),
                error=str(error),
                lines_lost=due.counts["lines"],
                writes_lost=due.counts["writes"],
            )

    def _written(self, path: Path) -> None:
        """After lost lines were said, that `path` (and so the logs) took lines again,
        with the losses since that line; said once (`LogThrottle.cleared`)."""
        due = self._losses.cleared(_LOST)
        if due is not None:
            log.warning(
                "task log lines are written again",
                path=str(path),
                lines_lost=due.counts.get("lines", 0),
                writes_lost=due.counts.get("writes", 0),
            )


def _private_folder(folder: Path) -> None:
    """`folder` and any missing parents, each made 0700 (`mkdir(parents=True)` would
    give the parents the umask's mode)."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        return
    except FileNotFoundError:
        _private_folder(folder.parent)
        folder.mkdir(mode=0o700, exist_ok=True)


def _write(path: Path, lines: list[str]) -> None:
    _private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8", errors="replace") as handle:
        for line in lines:
            handle.write(line[:MAX_LINE].rstrip("\n") + "\n")


def make_private(root: Path) -> int:
    """Tighten the logs under `root` (the manager's own `logs` folder) to 0600 files in
    0700 folders; how many files and folders were changed.

    For logs written before logs were private. It walks the tree only while `root`
    itself is open to others, which it leaves 0700 at the end: later starts cost one
    `stat`. Something this account may not change is skipped (reading it would have
    failed as well)."""
    try:
        if not stat.S_IMODE(root.stat().st_mode) & 0o077:
            return 0
    except FileNotFoundError:
        return 0
    changed = 0
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            changed += _tighten(Path(folder) / name)
    return changed + _tighten(root)


def _tighten(path: Path) -> int:
    try:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode) or not mode & 0o077:
            return 0
        os.chmod(path, mode & 0o700)
    except FileNotFoundError:  # its job was deleted meanwhile
        return 0
    except OSError as error:
        log.warning("cannot make a task log private", path=str(path), error=str(error))
        return 0
    return 1


def job_folders(root: Path) -> dict[int, Path]:
    """The log folders under `root`, by job id."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return {}
    folders: dict[int, Path] = {}
    for entry in entries:
        match = _JOB_FOLDER.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            folders[int(match[1])] = Path(entry.path)
    return folders


def set_aside_stale(
    root: Path, existing: Callable[[Collection[int]], Collection[int]], now: datetime
) -> Path | None:
    """Move the log folders of jobs that do not exist into `root/stale-<time>/`; that
    folder, or None if every log has its job.

    `existing(ids)` answers which of `ids` are jobs. The folders are listed first and
    the jobs asked after: a job writes logs only once it exists, so a folder listed
    before the question is answered never belongs to a job that is not seen yet."""
    folders = job_folders(root)
    if not folders:
        return None
    stale = sorted(set(folders) - set(existing(folders.keys())))
    if not stale:
        return None
    aside = root / f"stale-{now:%Y%m%dT%H%M%S}"
    _private_folder(aside)
    moved = 0
    for job_id in stale:
        try:
            os.rename(folders[job_id], aside / folders[job_id].name)
        except FileNotFoundError:  # deleted with its job meanwhile
            continue
        moved += 1
    log.warning(
        "task logs of jobs the database does not have were moved aside: a new job with "
        "one of their ids would have shown them as its own",
        folders=moved,
        moved_to=str(aside),
        jobs=stale[:10],
    )
    return aside
