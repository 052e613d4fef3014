"""`farmhand node`: the tutorial's rendering node (Part 1), as a drop-in replacement.

The HTTP contract is the tutorial's, so an orchestrator written against it works
unchanged: `POST /job {"from": a, "to": b}` answers 202 with `Location: /job/{id}` and
`Retry-After`, and `GET /job/{id}` answers 202 while the job waits or renders and 200
when it is done. What differs is everything the tutorial leaves to chance:

- `from`/`to` must be JSON integers within Blender's frame limits; anything else is a 400
  and no process is started (the tutorial pastes them into a shell command).
- A failed render is reported (`500 Job failed: <reason>`), not "completed" because the
  process ended: success means every frame exists and is a complete image.
- At most `max_concurrent` Blenders run; further jobs wait, up to `queue_limit`, past
  which `POST /job` answers 503 + Retry-After.
- Python embedded in the .blend never runs (see the driver).
- `DELETE /job/{id}` cancels one job (the tutorial's `kill PID`, which a job id is not):
  a waiting job never starts, a rendering one's Blender is stopped as stopping the node
  stops it; `GET` then answers `410 Job canceled` (`JOB_CANCELED`).
- `GET /metrics` answers jobs by status and the queue in Prometheus' text format.
- A body over 64 KiB is a 413, one nesting deeper than 32 levels a 400 (`limits`).
- A request whose head or body stops arriving is a 408 after `client_timeout` seconds,
  and its connection is closed, as the manager's (`limits`, `HEAD_TIMEOUT_ANSWER`).
- Job ids are never handed out again, not even by a restarted node (`jobs`).
- Only frames (and File Output nodes' files, under `passes/`) land in the output folder,
  each once it is verified (`_renderer`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from farmhand import __version__
from farmhand.manager.connections import HEAD_TIMED_OUT
from farmhand.node.jobs import Cancel, JobQueue, JobState, NodeJob, QueueFull
from farmhand.node.limits import BodyLimitMiddleware
from farmhand.shared.frames import FrameRangeError, frame_list
from farmhand.shared.ids import path_id
from farmhand.shared.metrics import CONTENT_TYPE, Family
from farmhand.shared.metrics import render as render_metrics
from farmhand.shared.timeouts import CLIENT_TIMEOUT
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameSaved
from farmhand.worker.blender.process import RenderRequest, render

FILE_STEM = "blender-render_"
"""Frames are written as `{output}/blender-render_0001.png`, as the tutorial's `-o` does."""

RENDERING_DIR = ".farmhand-rendering"
"""Under the output folder: one folder per running job, where its Blender writes."""


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node needs; passed in, never read from globals."""

    blend: Path
    output: Path
    install: BlenderInstall
    max_concurrent: int = 1
    queue_limit: int = 16
    retry_after: int = 5
    """Seconds a client is told to wait before polling again (the tutorial's 5)."""
    engine: str | None = "CYCLES"
    """The tutorial renders with `-E CYCLES`; None keeps the .blend's own engine."""
    threads: int | None = None
    """Render threads per Blender; None uses all cores, like the tutorial's `-t 0`."""
    log_dir: Path | None = None
    """Per-job Blender logs; default `{output}/.farmhand-logs`, out of the frames' way."""
    client_timeout: float = CLIENT_TIMEOUT
    """Seconds a request's head may take and its body may stall before a 408 (the
    server's protocol times heads: `HEAD_TIMEOUT_ANSWER`)."""


class JobRequest(BaseModel):
    """`{"from": 1, "to": 5}`: strict JSON integers, so `true`, `1.0` and `"1"` are refused."""

    model_config = ConfigDict(strict=True, populate_by_name=True, extra="ignore")

    from_: StrictInt = Field(alias="from", description="first frame")
    to: StrictInt = Field(description="last frame, inclusive")


class JobAccepted(BaseModel):
    pid: int = Field(description="The job id (named `pid` for the tutorial's clients).")


HOW_TO_ASK = 'send JSON {"from": <integer>, "to": <integer>} with Content-Type: application/json'


HEAD_TIMEOUT_ANSWER = ("text/plain; charset=utf-8", f"Request timeout: {HEAD_TIMED_OUT}".encode())
"""The 408 to a request whose head did not arrive in time, plain text as every answer
(`farmhand.manager.connections.head_timeout_protocol`)."""


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> PlainTextResponse:
    return PlainTextResponse(body, status_code=status, headers=headers)


JOB_CANCELED = (410, "Job canceled")
"""A canceled job's final answer, to `GET` and to `DELETE` alike. 410 Gone, not the 500
of a failed render: nothing failed on the node, someone asked for it, and its frames will
never all be there. Like every answer other than 200 and 202 it ends an orchestrator's
polling (farmhand's sends the frames to a node again)."""


def _refuse_body(status: int, problem: str) -> Response:
    """The body limits' refusals in the node's own style: plain text, as every answer."""
    if status == 413:
        return _text(413, f"Request too large: {problem}; {HOW_TO_ASK}")
    if status == 408:
        return _text(408, f"Request timeout: {problem}")
    return _text(status, f"Invalid input: {HOW_TO_ASK}; {problem}")


def _renderer(settings: NodeSettings) -> Callable[[NodeJob], str | None]:
    """Renders a job into a folder of its own, `{output}/.farmhand-rendering/job-…/`, and
    moves each frame into the output folder once it is verified, with the files the
    scene's File Output nodes wrote for it (into `{output}/passes/`, as before). It asks
    for no previews (the worker's are for the manager's web UI), and whatever else
    Blender leaves is deleted with the job's folder: it has no place among the frames,
    where several nodes may write. Renaming within the output folder is
    atomic, so a frame another node or a person reads there is never half written, and
    what a killed or failed render leaves never lands among good frames.

    A frame that cannot be moved fails the job: "completed" means the frames are there.

    A canceled job (`DELETE /job/{id}`, or the node stopping) keeps the frames already
    moved: each is a complete, verified image, and in a shared folder the same file may
    as well be another job's render of that frame, so deleting it could take away a
    good frame someone else is counting on. The frame being rendered goes with the job's
    folder, so the folder never holds half a frame.
    """
    log_dir = settings.log_dir or settings.output / ".farmhand-logs"

    def run(job: NodeJob) -> str | None:
        try:
            parent = settings.output / RENDERING_DIR
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"job-{job.id}-", dir=parent))
        except OSError as error:
            return f"cannot write in {settings.output}: {error.strerror or error}"
        extras: dict[int, tuple[Path, ...]] = {}
        placed: set[int] = set()
        problems: list[str] = []

        def saved(event: Event) -> None:
            if isinstance(event, FrameSaved):
                extras[event.frame] = event.extras

        def verified(frame: int, path: Path) -> None:
            # On the thread reading Blender's output: an exception here would only be
            # logged, so a move that fails is noted and fails the job below.
            try:
                for extra in extras.pop(frame, ()):
                    _place(extra, settings.output / extra.relative_to(folder))
                _place(path, settings.output / path.name)
            except (OSError, ValueError) as error:
                problems.append(f"frame {frame}: cannot move it into {settings.output}: {error}")
            else:
                placed.add(frame)

        try:
            result = render(
                settings.install,
                RenderRequest(
                    blend_path=settings.blend,
                    frames=job.frames,
                    output_dir=folder,
                    engine=settings.engine,
                    threads=settings.threads,
                    file_stem=FILE_STEM,
                    previews=False,
                ),
                log_path=log_dir / f"job-{job.id}.log",
                on_event=saved,
                on_frame_ready=verified,
                cancel=job.cancel,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not result.ok:
            return result.error or "unknown error"
        if problems:
            return problems[0]
        missing = sorted(set(job.frames) - placed)
        return f"frame {missing[0]}: not moved into {settings.output}" if missing else None

    return run


def _place(source: Path, target: Path) -> None:
    """Move a rendered file to where it belongs, replacing an older render of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _metrics(settings: NodeSettings, jobs: JobQueue) -> list[Family]:
    """What shows a node filling up or failing, read at scrape time from the job table
    `GET /job` answers from (nothing counted on the side, so nothing can drift)."""
    counts = jobs.counts()
    by_status = Family("farmhand_node_jobs", "Jobs this node knows (since it started), by status.")
    for state, count in counts.items():
        by_status.add(count, status=state.value)
    return [
        Family("farmhand_node_info", "This node's farmhand version and its Blender's.").add(
            1, version=__version__, blender=settings.install.version
        ),
        by_status,
        Family("farmhand_node_renders_running", "Jobs rendering now (Blenders running).").add(
            counts[JobState.RENDERING]
        ),
        Family("farmhand_node_max_concurrent", "Renders at once at most (--max-concurrent).").add(
            settings.max_concurrent
        ),
        Family("farmhand_node_queue_length", "Jobs waiting for a free render slot.").add(
            counts[JobState.QUEUED]
        ),
        Family(
            "farmhand_node_queue_limit",
            "Jobs that may wait (--queue-limit); past it POST /job answers 503.",
        ).add(settings.queue_limit),
    ]


def create_node_app(
    settings: NodeSettings, run: Callable[[NodeJob], str | None] | None = None
) -> FastAPI:
    """The node's ASGI app; `run` replaces the Blender renderer (for tests)."""
    jobs = JobQueue(
        run or _renderer(settings),
        max_concurrent=settings.max_concurrent,
        queue_limit=settings.queue_limit,
    )
    retry = {"Retry-After": str(settings.retry_after)}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.output.mkdir(parents=True, exist_ok=True)
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()

    app = FastAPI(
        title="farmhand node",
        summary="The tutorial's rendering node: POST /job, poll GET /job/{id}.",
        lifespan=lifespan,
    )
    app.state.jobs = jobs
    app.add_middleware(
        BodyLimitMiddleware, refuse=_refuse_body, idle_timeout=settings.client_timeout
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, error: RequestValidationError) -> Response:
        # The tutorial answers 400 to bad input; FastAPI's default would be 422.
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return _text(400, f"Invalid input: {HOW_TO_ASK}; " + "; ".join(problems))

    @app.post(
        "/job",
        status_code=202,
        response_model=JobAccepted,
        responses={
            400: {"description": "Invalid input (text)"},
            413: {"description": "Request too large: the body is over 64 KiB (text)"},
            503: {"description": "Queue full; retry after Retry-After seconds (text)"},
        },
    )
    def submit_job(body: JobRequest) -> Response:
        """Queue a render of frames `from`..`to`; poll the `Location` it answers with."""
        try:
            frames = frame_list(body.from_, body.to)
        except FrameRangeError as error:
            return _text(400, f"Invalid input: {error}")
        try:
            job = jobs.submit(frames)
        except QueueFull as full:
            return _text(503, f"Node busy: {full}; retry later", retry)
        return JSONResponse(
            {"pid": job.id},
            status_code=202,
            headers={"Location": f"/job/{job.id}", **retry},
        )

    @app.get(
        "/job/{job_id}",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "Job completed: every frame exists and is a valid image"},
            202: {"description": "Job still running (or waiting its turn)"},
            400: {"description": "Job not found"},
            500: {"description": "Job failed: <reason>"},
        },
    )
    def job_status(job_id: str) -> Response:
        """The tutorial's answers: 202 still running, 200 completed, 400 not found."""
        number = path_id(job_id)
        job = jobs.get(number) if number is not None else None
        if job is None:
            return _text(400, "Job not found")
        if job.state is JobState.COMPLETED:
            return _text(200, "Job completed")
        if job.state is JobState.FAILED:
            return _text(500, f"Job failed: {job.error}")
        if job.state is JobState.CANCELED:
            return _text(*JOB_CANCELED)
        if job.canceling:
            return _text(202, "Job canceling", {"Location": f"/job/{job.id}", **retry})
        return _text(202, "Job still running", {"Location": f"/job/{job.id}", **retry})

    @app.delete(
        "/job/{job_id}",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "Job canceled: it was waiting and never started"},
            202: {"description": "Job canceling: its Blender is being stopped; poll Location"},
            400: {"description": "Job not found"},
            409: {"description": "Job already finished: it completed or failed first"},
        },
    )
    def cancel_job(job_id: str) -> Response:
        """Cancel a job, as the tutorial's `kill PID` stops its render.

        In the node's polling style: 200 once the job is canceled (a waiting job at once,
        or one canceled before: DELETE may be repeated), 202 with `Location` while its
        Blender is being stopped (`GET` answers 202 `Job canceling`, then 410 `Job
        canceled`), 409 for a job that completed or failed first.
        """
        number = path_id(job_id)
        outcome = jobs.cancel(number) if number is not None else None
        if outcome is None:
            return _text(400, "Job not found")
        job, done = outcome
        if done is Cancel.STOPPING:
            return _text(202, "Job canceling", {"Location": f"/job/{job.id}", **retry})
        if done is Cancel.FINISHED:
            return _text(409, f"Job already finished ({job.state.value}): nothing to cancel")
        return _text(200, JOB_CANCELED[1])

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text 0.0.4"}},
    )
    def metrics() -> PlainTextResponse:
        """Jobs by status, renders running and the queue, for Prometheus."""
        return PlainTextResponse(render_metrics(_metrics(settings, jobs)), media_type=CONTENT_TYPE)

    return app
