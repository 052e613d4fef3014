"""Task logs: append-only text files under `<data_dir>/logs/job-<id>/task-<id>.log`.

Logs grow to megabytes for long renders and are read rarely, so they live beside the
blob store rather than in the database.
"""

from __future__ import annotations

from pathlib import Path

MAX_LINE = 4000


class TaskLogs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, job_id: int, task_id: int) -> Path:
        return self.root / f"job-{job_id}" / f"task-{task_id}.log"

    def append(self, job_id: int, task_id: int, lines: list[str]) -> None:
        if not lines:
            return
        path = self.path_for(job_id, task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8", errors="replace") as handle:
            for line in lines:
                handle.write(line[:MAX_LINE].rstrip("\n") + "\n")

    def read(self, job_id: int, task_id: int) -> str:
        path = self.path_for(job_id, task_id)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
