"""`farmhand runners`, `farmhand runner disable | enable | drain | delete | sleep` and
`farmhand blocklist [clear]`: the workers of the farm, for its admins.

Thin commands over `/api/admin/runners…` and `/api/admin/blocklist…`. A runner is named
by its name as `farmhand runners` shows it; when several runners share a name (a machine
that registered again), `id:N` picks one by the id in the same table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from farmhand.cli.jobs_cmd import (
    TokenOption,
    UrlOption,
    console,
    err,
    fail,
    human_seconds,
    manager_errors,
    open_client,
)
from farmhand.cli.shown import shown, visible
from farmhand.client import FarmhandClient
from farmhand.shared.schemas import (
    WEEKDAYS,
    RunnerActionName,
    RunnerInfo,
    SleepSchedule,
    SleepWindow,
    When,
)

runner = typer.Typer(
    no_args_is_help=True, help="Disable, enable, drain, delete or schedule a runner (admins)."
)
blocklist = typer.Typer(
    help="Workers kept off a job after failing its tasks (admins); `clear` lets them back."
)

RunnerArgument = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The runner's name as `farmhand runners` shows it (or id:N).",
        show_default=False,
    ),
]
NowOption = Annotated[
    bool,
    typer.Option("--now", help="Abort its running task now (requeued, not counted as a failure)."),
]

DAYS: tuple[str, ...] = WEEKDAYS
TIME = re.compile(r"^\d{2}:\d{2}$")
STATUS_COLOURS = {
    "idle": "green",
    "busy": "cyan",
    "offline": "red",
    "disabled": "yellow",
    "draining": "yellow",
    "asleep": "blue",
}


def _runner_status(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "white")
    return f"[{colour}]{shown(status)}[/{colour}]"


def find_runner(client: FarmhandClient, name: str) -> RunnerInfo:
    """The runner with this name (or `id:N`); an unknown or shared name is a clear error."""
    everyone = client.list_runners()
    if name.startswith("id:") and name[3:].isdigit():
        matches = [one for one in everyone if one.id == int(name[3:])]
    else:
        matches = [one for one in everyone if one.name == name]
    if not matches:
        raise fail(f"no runner {name!r} (`farmhand runners` lists them)")
    if len(matches) > 1:
        ids = ", ".join(f"id:{one.id}" for one in matches)
        raise fail(f"{len(matches)} runners are named {name!r}: give one of {ids}")
    return matches[0]


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return human_seconds((datetime.now(UTC) - when).total_seconds()) + " ago"


def format_days(days: Sequence[str]) -> str:
    """`mon,tue,wed,thu,fri` as `mon-fri`; every day as `daily`. A run over the week's
    end is one range, as `--window` takes it: `fri-mon`, not `mon,fri-sun`. The web
    page's `formatDays` (app.js) writes them the same way."""
    chosen = sorted({DAYS.index(day) for day in days})
    if len(chosen) == len(DAYS):
        return "daily"
    runs: list[list[int]] = []
    for index in chosen:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == len(DAYS) - 1:
        runs[-1].extend(runs.pop(0))
    return ",".join(
        DAYS[run[0]] if len(run) == 1 else f"{DAYS[run[0]]}-{DAYS[run[-1]]}" for run in runs
    )


def format_schedule(schedule: SleepSchedule | None) -> str:
    if schedule is None or not schedule.windows:
        return ""
    windows = ", ".join(f"{format_days(w.days)} {w.start}-{w.end}" for w in schedule.windows)
    return f"{windows} ({schedule.timezone})"


def _days(spec: str) -> list[str]:
    """`mon-fri`, `sat,sun`, `fri-mon` (wraps), `mon,wed-fri` or `daily` as day names."""
    if spec == "daily":
        return list(DAYS)
    days: list[str] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{part!r} is not a day or range of days (mon … sun, daily)")
        start, end = DAYS.index(first), DAYS.index(last or first)
        for step in range((end - start) % len(DAYS) + 1):
            day = DAYS[(start + step) % len(DAYS)]
            if day not in days:
                days.append(day)
    return days


def parse_window(spec: str) -> SleepWindow:
    """`DAYS HH:MM-HH:MM`, e.g. `mon-fri 09:00-18:00` or `daily 22:00-06:00` (overnight)."""
    fields = spec.split()
    if len(fields) != 2:
        raise ValueError("write it as DAYS HH:MM-HH:MM, e.g. 'mon-fri 09:00-18:00'")
    start, _, end = fields[1].partition("-")
    if not (TIME.match(start) and TIME.match(end)):
        raise ValueError(f"{fields[1]!r} is not HH:MM-HH:MM")
    days = _days(fields[0].lower())
    try:
        return SleepWindow.model_validate({"days": days, "start": start, "end": end})
    except ValidationError as error:
        # A window refused for what it means (`09:00-09:00` never applies) is explained
        # by the schema itself, as the manager's 400 would; only an hour out of range
        # is about the range.
        meant = [
            str(item.get("ctx", {}).get("error", item["msg"]))
            for item in error.errors()
            if item["type"] == "value_error"
        ]
        problem = meant[0] if meant else "times go from 00:00 to 24:00 (24:00 only as an end)"
        raise ValueError(f"{fields[1]!r}: {problem}") from None


def runner_address(info: RunnerInfo) -> str:
    """Where a runner is: the address the manager sees its requests come from, and the
    one it reports for itself when that differs (behind NAT, or a proxy whose forwarded
    headers the manager does not trust): `203.0.113.5 (local 192.168.1.20)`."""
    seen, own = info.address or "", info.capabilities.address
    if seen and own and seen != own:
        return f"{seen} (local {own})"
    return seen or own


def runner_status(info: RunnerInfo) -> str:
    """Its status, and what the manager adds to it (`status_note`: `too old: upgrade`),
    as the web's runners page shows them: the manager derives the note
    (`shared/protocol.status_note`), so the two never disagree."""
    note = f" ({shown(info.status_note)})" if info.status_note else ""
    return _runner_status(info.status) + note


def runners(url: UrlOption = None, token: TokenOption = None) -> None:
    """Every registered worker: where it is, its state, what it renders now, what it can
    render (admins)."""
    with manager_errors(), open_client(url, token) as client:
        rows = client.list_runners()
    table = Table(
        "id",
        "name",
        "address",
        "status",
        "task",
        "last seen",
        "tags",
        "device",
        "blender",
        "sleeps",
    )
    for one in rows:
        caps = one.capabilities
        current = ""
        if one.current_job_id is not None:
            number = one.current_task_index  # None from a manager that predates it
            current = f"job {one.current_job_id}" + (
                f" task {number}" if number is not None else ""
            )
            tile = one.current_task_tile
            if tile is not None:
                current += f" ({tile.label})"
            elif one.current_task_frame_count:
                current += f" ({one.current_task_frames_done}/{one.current_task_frame_count})"
        table.add_row(
            str(one.id),
            shown(one.name),
            shown(runner_address(one)),
            runner_status(one),
            shown(current),
            _ago(one.last_heartbeat),
            shown(", ".join(caps.tags)),
            shown(caps.device + (f":{caps.gpu}" if caps.gpu is not None else "")),
            shown(", ".join(caps.blender_versions)),
            shown(format_schedule(one.sleep_schedule)),
        )
    console.print(table)


def _said(info: RunnerInfo, what: str = "") -> None:
    console.print(
        f"runner {shown(info.name)} (id {info.id}): {_runner_status(info.status)}{shown(what)}"
    )


def _act(
    name: str, action: RunnerActionName, when: When, url: str | None, token: str | None
) -> None:
    with manager_errors(), open_client(url, token) as client:
        info = client.runner_action(find_runner(client, name).id, action, when)
    _said(info, ", disabled once its current task is done" if info.status == "draining" else "")


@runner.command()
def disable(
    name: RunnerArgument, now: NowOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Take no more tasks; the running one finishes first, unless --now."""
    _act(name, "disable", "now" if now else "after-task", url, token)


@runner.command()
def enable(name: RunnerArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Let a disabled or draining runner take tasks again."""
    _act(name, "enable", "after-task", url, token)


@runner.command()
def drain(name: RunnerArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Finish the running task, then take no more (the runner ends disabled)."""
    _act(name, "drain", "after-task", url, token)


@runner.command("delete")
def delete_runner(
    name: RunnerArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a runner: its secret stops working at once, its running task is requeued.

    Its worker is told it was deleted and stops; it does not register again by itself.
    Its operator can register it again on purpose, with a registration token: to lock
    the machine out for good, rotate the registration token it has.
    """
    with manager_errors(), open_client(url, token) as client:
        info = find_runner(client, name)
        if not yes and not typer.confirm(f"Delete runner {visible(info.name)} (id {info.id})?"):
            err.print(f"runner {shown(info.name)} was not deleted", highlight=False)
            raise typer.Exit(1)
        client.delete_runner(info.id)
    console.print(
        f"deleted runner {shown(info.name)} (id {info.id}); it cannot register again by itself "
        "(a machine holding a registration token still can: rotate that token to keep it out)",
        highlight=False,
    )


@runner.command()
def sleep(
    name: RunnerArgument,
    window: Annotated[
        list[str] | None,
        typer.Option(
            "--window",
            metavar="'DAYS HH:MM-HH:MM'",
            help="When it must not render, e.g. 'mon-fri 09:00-18:00', 'sat,sun 00:00-24:00' "
            "or 'daily 22:00-06:00' (overnight); repeat for more. Replaces its schedule.",
            show_default=False,
        ),
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA time zone of the windows, e.g. Europe/Paris.")
    ] = "UTC",
    clear: Annotated[bool, typer.Option("--clear", help="Remove its sleep schedule.")] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="At a window's start (now too, if inside one), abort the running task; "
            "default: let it finish.",
        ),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Set the hours a runner must not render (an artist's workstation by day)."""
    if clear == bool(window):
        raise fail("give --window (one or more) or --clear")
    try:
        windows = [parse_window(spec) for spec in window or []]
    except ValueError as error:
        raise fail(f"--window: {error}") from None
    schedule = SleepSchedule(
        timezone=timezone, windows=windows, when="now" if now else "after-task"
    )
    with manager_errors(), open_client(url, token) as client:
        info = client.set_sleep_schedule(find_runner(client, name).id, schedule)
    what = format_schedule(info.sleep_schedule)
    _said(info, f", sleeps {what}" if what else ", no sleep schedule")


@blocklist.callback(invoke_without_command=True)
def list_blocklist(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None) -> None:
    """Workers kept off a job after failing its tasks (admins); `clear` lets them back."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (url, token)  # `farmhand blocklist --url U clear 3` works too
        return
    with manager_errors(), open_client(url, token) as client:
        entries = client.list_blocklist()
    table = Table("id", "worker", "job", "task type", "reason", "since")
    for entry in entries:
        table.add_row(
            str(entry.id),
            shown(entry.worker),
            str(entry.job_id),
            shown(entry.task_type),
            shown(entry.reason),
            entry.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@blocklist.command()
def clear(
    ctx: typer.Context,
    entry_id: Annotated[
        int | None,
        typer.Argument(
            help="The entry's id, as `farmhand blocklist` shows it.", show_default=False
        ),
    ] = None,
    job: Annotated[
        int | None,
        typer.Option("--job", help="Clear every entry of this job instead.", show_default=False),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Let a blocklisted worker take the job's tasks again."""
    if (entry_id is None) == (job is None):
        raise fail("give an entry id or --job JOB")
    above = ctx.obj if isinstance(ctx.obj, tuple) else (None, None)
    with manager_errors(), open_client(url or above[0], token or above[1]) as client:
        if entry_id is not None:
            client.clear_blocklist_entry(entry_id)
            console.print(f"cleared blocklist entry {entry_id}")
            return
        entries = client.list_blocklist(job)
        for entry in entries:
            client.clear_blocklist_entry(entry.id)
    workers = ", ".join(sorted({entry.worker for entry in entries}))
    console.print(
        f"cleared {len(entries)} blocklist entries of job {job}"
        + (f" ({shown(workers)})" if workers else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(runners)
    app.add_typer(runner, name="runner")
    app.add_typer(blocklist, name="blocklist")
