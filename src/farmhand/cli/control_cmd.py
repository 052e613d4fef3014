"""`farmhand pause | resume | requeue | priority | delete` and `farmhand task requeue |
cancel`: control of a job and of its tasks once it is submitted.

Thin commands over `POST /api/jobs/{id}/actions`, `PATCH /api/jobs/{id}`,
`DELETE /api/jobs/{id}?purge=true` and `POST /api/jobs/{id}/tasks/{task_id}/actions`.
A task is named by its number in the job, as `farmhand job JOB` shows it (the `task`
column), not by its id in the database.
"""

from __future__ import annotations

from typing import Annotated

import typer

from farmhand.cli.jobs_cmd import (
    TokenOption,
    UrlOption,
    _status,
    console,
    err,
    fail,
    manager_errors,
    open_client,
)
from farmhand.cli.shown import shown
from farmhand.cli.words import plural
from farmhand.client import FarmhandClient
from farmhand.shared.schemas import JobActionName, JobSummary, TaskActionName

task = typer.Typer(no_args_is_help=True, help="Requeue or cancel one task of a job.")

JobArgument = Annotated[int, typer.Argument(help="Job id.", show_default=False)]
TaskArgument = Annotated[
    int,
    typer.Argument(help="The task's number, as `farmhand job JOB` shows it.", show_default=False),
]


def _said(summary: JobSummary, what: str = "") -> None:
    console.print(f"job {summary.id} {shown(repr(summary.name))}: {_status(summary.status)}{what}")


def _job_action(job_id: int, action: JobActionName, url: str | None, token: str | None) -> None:
    with manager_errors(), open_client(url, token) as client:
        summary = client.job_action(job_id, action)
    _said(summary)


def pause(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Start no new task of a job; tasks already running finish."""
    _job_action(job_id, "pause", url, token)


def resume(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Let a paused job's tasks start again."""
    _job_action(job_id, "resume", url, token)


def requeue(
    job_id: JobArgument,
    failed_only: Annotated[
        bool,
        typer.Option("--failed-only", help="Only failed and canceled tasks, not completed ones."),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Render a job's finished tasks again (all of them, or --failed-only).

    Clears the job's blocklist too: whatever made workers fail is presumably fixed.
    """
    with manager_errors(), open_client(url, token) as client:
        outcome = client.job_action(job_id, "requeue-failed" if failed_only else "requeue-all")
    if outcome.requeued is None:  # a manager from before the count: it did not say
        _said(outcome)
        return
    if outcome.requeued:
        _said(outcome, f" ({plural(outcome.requeued, 'task')} requeued)")
        return
    # Without the count a job with none of the tasks asked for would read as done
    # ("job 4 'shot010': completed"); its blocklist was still cleared.
    which = "failed or canceled" if failed_only else "finished"
    console.print(
        f"nothing to requeue: job {outcome.id} {shown(repr(outcome.name))} has no {which} "
        f"tasks; it is {_status(outcome.status)}"
    )


def priority(
    job_id: JobArgument,
    value: Annotated[
        int, typer.Argument(min=0, max=100, help="0 to 100; higher goes first.", show_default=False)
    ],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a job's priority; it counts from the next task handed out."""
    with manager_errors(), open_client(url, token) as client:
        summary = client.set_priority(job_id, value)
    _said(summary, f", priority {summary.priority}")


def delete(
    job_id: JobArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a job with its logs and rendered outputs (a running job is canceled first).

    This cannot be undone; `farmhand cancel` stops a job and keeps what it made.
    """
    with manager_errors(), open_client(url, token) as client:
        detail = client.get_job(job_id)
        question = f"Delete job {detail.id} {detail.name!r} and its outputs?"
        if not yes and not typer.confirm(question):
            err.print(f"job {detail.id} was not deleted", highlight=False)
            raise typer.Exit(1)
        client.delete_job(job_id)
    console.print(
        f"deleted job {detail.id} {shown(repr(detail.name))} and its outputs", highlight=False
    )


def task_id(client: FarmhandClient, job_id: int, number: int) -> int:
    """The id of a job's task numbered `number` (its index, as `farmhand job` shows it)."""
    detail = client.get_job(job_id)
    for one in detail.tasks:
        if one.index == number:
            return one.id
    shown = f"tasks 0-{len(detail.tasks) - 1}" if detail.tasks else "no tasks"
    raise fail(f"job {job_id} has no task {number} ({shown}; see `farmhand job {job_id}`)")


def _task_action(
    job_id: int, number: int, action: TaskActionName, url: str | None, token: str | None
) -> None:
    with manager_errors(), open_client(url, token) as client:
        summary = client.task_action(job_id, task_id(client, job_id, number), action)
        now = next((t for t in client.get_job(job_id).tasks if t.index == number), None)
    _said(summary, f"; task {number} {_status(now.status)}" if now else "")


@task.command("requeue")
def task_requeue(
    job_id: JobArgument, number: TaskArgument, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Render one task again from scratch (and the tasks that depend on it)."""
    _task_action(job_id, number, "requeue", url, token)


@task.command("cancel")
def task_cancel(
    job_id: JobArgument, number: TaskArgument, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Cancel one queued or running task (and the tasks that depend on it)."""
    _task_action(job_id, number, "cancel", url, token)


def register(app: typer.Typer) -> None:
    for command in (pause, resume, requeue, priority, delete):
        app.command()(command)
    app.add_typer(task, name="task")
