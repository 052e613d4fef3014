"""The node's job queue: at most N renders at once, a bounded line of waiting jobs.

The tutorial's node starts a Blender per request, with no limit: ten requests make ten
Blenders fighting over the same cores and memory. Here a fixed number of worker threads
take jobs in order, and when the waiting line is full new jobs are refused (the HTTP
layer turns that into 503 + Retry-After) instead of piling up without bound.

Jobs are numbered by the node rather than named by a process id (the tutorial uses the
PID): a queued job has no process yet, and PIDs are reused by the OS, so an old id could
point at someone else's process.

Ids must not come round again after a restart either. Jobs live in memory, so a
restarted node has forgotten the ones an orchestrator may still be polling; that is fine
as long as it answers `400 Job not found` for them (the orchestrator sends the batch
again). Counting from 1 in every process made the first job after a restart take the id
of the first job before it, and its "Job completed" was taken for a batch of frames that
were never rendered. So an id is the wall clock in microseconds since the Unix epoch
when the job is accepted, bumped by one if that is not above the last id (two jobs in
one microsecond, or the clock stepped back while running): ids only grow within a run,
and a later run starts above every id an earlier one handed out, because a node takes
far longer than a microsecond per job and to restart.

Chosen over a counter kept in a file because the clock needs nothing that can fail or be
shared: several nodes may write one output folder (a file per node needs a name that
survives a restart, which a container's host name does not; a lock is unreliable on a
network file system), the folder may be read-only, the file missing or cut short by a
crash, and a counter must be saved before each id is answered. What the clock cannot
rule out is a wall clock stepped back across a restart by more than the node was down;
even then an old id names a new job only if both were accepted at the same microsecond
reading, because ids are scattered timestamps, not a run of consecutive numbers.

Ids stay integers (the tutorial's clients read `{"pid": N}`), about 1.8e15 in 2026, and
below 2**53 until the year 2255, so JavaScript clients read them exactly.

One job can be canceled (`cancel`, the node's `DELETE /job/{id}`): the tutorial says to
`kill` its PID, which a job id is not. A waiting job leaves the line at once and never
starts. A rendering job's Blender is stopped the way stopping the node stops it, through
the job's `cancel` event (the renderer kills Blender's process group: SIGTERM, then
SIGKILL after a grace), and the job is `CANCELED` when its render thread returns. The
lock decides a cancel racing the render's natural end: whichever takes it first wins, so
a job asked to cancel while it was still rendering ends `CANCELED` even if its last frame
was saved meanwhile, and one that ended first stays `COMPLETED`/`FAILED` (the cancel is
refused). Either way the job ends in exactly one final state, counted once.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def clock_id() -> int:
    """Microseconds since the Unix epoch: where job ids start (see the module's doc)."""
    return time.time_ns() // 1_000


class JobState(enum.Enum):
    QUEUED = "queued"
    RENDERING = "rendering"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass
class NodeJob:
    id: int
    frames: list[int]
    state: JobState = JobState.QUEUED
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set to stop the render: by `JobQueue.cancel` or when the node stops."""
    canceling: bool = False
    """Someone canceled it while it rendered: it ends `CANCELED`, whatever the render says."""

    @property
    def finished(self) -> bool:
        return self.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELED)


class Cancel(enum.Enum):
    """What `JobQueue.cancel` did."""

    CANCELED = "canceled"
    """The job is canceled now (it was waiting, or had been canceled before)."""
    STOPPING = "stopping"
    """Its Blender is being stopped; the job turns `CANCELED` when it is gone."""
    FINISHED = "finished"
    """It had already completed or failed: nothing to cancel."""


class QueueFull(Exception):
    """The waiting line is at its limit; try again later."""


RunJob = Callable[[NodeJob], str | None]
"""Renders one job; returns None on success or the reason it failed."""


class JobQueue:
    """Jobs by id, a waiting line and `max_concurrent` threads that render from it."""

    def __init__(
        self,
        run: RunJob,
        *,
        max_concurrent: int = 1,
        queue_limit: int = 16,
        clock: Callable[[], int] = clock_id,
    ) -> None:
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
        self._clock = clock
        self._last_id = 0
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
            # Never an id of an earlier run (see the module's doc), never one of this run.
            self._last_id = max(self._clock(), self._last_id + 1)
            job = NodeJob(self._last_id, frames)
            self._jobs[job.id] = job
            self._unfinished += 1
        self._waiting.put(job)
        return job

    def get(self, job_id: int) -> NodeJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: int) -> tuple[NodeJob, Cancel] | None:
        """Cancel a job (None if there is no such job); see the module's doc.

        A waiting job is `CANCELED` at once and frees its place in the line: the render
        threads skip it. A rendering one has its `cancel` event set, which stops its
        Blender as stopping the node does; it stays `RENDERING` until that is done.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state is JobState.QUEUED:
                job.state = JobState.CANCELED
                self._unfinished -= 1
                return job, Cancel.CANCELED
            if job.state is JobState.RENDERING:
                job.canceling = True
                job.cancel.set()
                return job, Cancel.STOPPING
            if job.state is JobState.CANCELED:
                return job, Cancel.CANCELED
            return job, Cancel.FINISHED

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
                if job.state is not JobState.QUEUED:
                    continue  # canceled while it waited (and counted out then): never starts
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
                if job.canceling:
                    job.state = JobState.CANCELED
                else:
                    job.error = error
                    job.state = JobState.COMPLETED if error is None else JobState.FAILED
                self._unfinished -= 1
