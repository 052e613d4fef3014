"""The node's job queue: at most N renders at once, a bounded line of waiting jobs.

The tutorial's node starts a Blender per request, with no limit: ten requests make ten
Blenders fighting over the same cores and memory. Here a fixed number of worker threads
take jobs in order, and when the waiting line is full new jobs are refused (the HTTP
layer turns that into 503 + Retry-After) instead of piling up without bound.

Jobs are numbered from 1 by the node rather than named by a process id (the tutorial
uses the PID): a queued job has no process yet, PIDs are reused by the OS so an old id
could point at someone else's process, and a restart would make ids collide.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


class JobState(enum.Enum):
    QUEUED = "queued"
    RENDERING = "rendering"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass
class NodeJob:
    id: int
    frames: list[int]
    state: JobState = JobState.QUEUED
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in (JobState.COMPLETED, JobState.FAILED)


class QueueFull(Exception):
    """The waiting line is at its limit; try again later."""


RunJob = Callable[[NodeJob], str | None]
"""Renders one job; returns None on success or the reason it failed."""


class JobQueue:
    """Jobs by id, a waiting line and `max_concurrent` threads that render from it."""

    def __init__(self, run: RunJob, *, max_concurrent: int = 1, queue_limit: int = 16) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if queue_limit < 0:
            raise ValueError("queue_limit must not be negative")
        self._run = run
        self._max_concurrent = max_concurrent
        self._queue_limit = queue_limit
        self._lock = threading.Lock()
        self._jobs: dict[int, NodeJob] = {}
        self._waiting: queue.Queue[NodeJob | None] = queue.Queue()
        self._unfinished = 0
        self._next_id = 1
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        for index in range(self._max_concurrent):
            thread = threading.Thread(target=self._work, name=f"node-render-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel running renders (killing their Blenders) and end the worker threads."""
        with self._lock:
            self._stopping = True
            for job in self._jobs.values():
                job.cancel.set()
        for _ in self._threads:
            self._waiting.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def submit(self, frames: list[int]) -> NodeJob:
        """Queue a job for `frames`; raises QueueFull when `queue_limit` jobs already wait."""
        with self._lock:
            if self._stopping:
                raise QueueFull("the node is shutting down")
            # Counted as all unfinished jobs against slots + line, not as jobs still in the
            # line: a job a thread is about to pick up must not make the next one bounce.
            if self._unfinished >= self._max_concurrent + self._queue_limit:
                waiting = self._unfinished - self._max_concurrent
                raise QueueFull(f"{waiting} jobs are already waiting")
            job = NodeJob(self._next_id, frames)
            self._next_id += 1
            self._jobs[job.id] = job
            self._unfinished += 1
        self._waiting.put(job)
        return job

    def get(self, job_id: int) -> NodeJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def counts(self) -> dict[JobState, int]:
        """Jobs in each state right now, every state present (0 included)."""
        with self._lock:
            counts = dict.fromkeys(JobState, 0)
            for job in self._jobs.values():
                counts[job.state] += 1
            return counts

    def _work(self) -> None:
        while True:
            job = self._waiting.get()
            if job is None:
                return
            with self._lock:
                if self._stopping:
                    job.state, job.error = JobState.FAILED, "the node shut down"
                    self._unfinished -= 1
                    continue
                job.state = JobState.RENDERING
            try:
                error = self._run(job)
            except Exception as exc:  # a bug in rendering must fail the job, not the thread
                error = f"internal error: {exc!r}"
            with self._lock:
                job.error = error
                job.state = JobState.COMPLETED if error is None else JobState.FAILED
                self._unfinished -= 1
