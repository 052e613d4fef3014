"""Task logs: append-only text files under `<data_dir>/logs/job-<id>/task-<id>.log`.

Logs grow to megabytes for long renders and are read rarely, so they live beside the
blob store rather than in the database.

Every progress report of every worker brings log lines. Appending them is a few system
calls, but on the event loop those would stall every other request, and a thread hand-off
per report costs more than the write. So `append` only queues the lines; one writer
thread appends them, in order. Whoever reads a log (`read`) or removes one first waits
for what is queued (`flush`), so nobody sees a log without lines already accepted.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

MAX_LINE = 4000


class TaskLogs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._queue: queue.SimpleQueue[tuple[Path, list[str]] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def path_for(self, job_id: int, task_id: int) -> Path:
        return self.root / f"job-{job_id}" / f"task-{task_id}.log"

    def append(self, job_id: int, task_id: int, lines: list[str]) -> None:
        """Queue `lines` for the task's log (returns at once; see the module docstring)."""
        if not lines:
            return
        self._ensure_started()
        self._queue.put((self.path_for(job_id, task_id), list(lines)))

    def flush(self) -> None:
        """Wait until every line queued before this call is in its file."""
        if self._thread is None:
            return
        written = threading.Event()
        self._queue.put(written)
        written.wait()

    def read(self, job_id: int, task_id: int) -> str:
        self.flush()
        path = self.path_for(job_id, task_id)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Write what is queued and stop the writer thread (a later append restarts it)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="farmhand-task-logs", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            path, lines = item
            try:
                _write(path, lines)
            except OSError as error:  # a full disk must not stop the logs that follow
                log.error("task log lines lost", path=str(path), error=str(error))


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", errors="replace") as handle:
        for line in lines:
            handle.write(line[:MAX_LINE].rstrip("\n") + "\n")
