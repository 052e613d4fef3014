"""`farmhand worker`: run a render worker that pulls tasks from a manager."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, get_args

import typer
from pydantic import TypeAdapter, ValidationError

from farmhand.cli.config import token_problem
from farmhand.shared.logconfig import configure_logging
from farmhand.shared.pathmap import PathMapError, current_platform, parse_path_maps
from farmhand.shared.schemas import DeviceKind, RunnerRegister, WorkerCapabilities
from farmhand.worker.agent import WorkerSettings, run_worker
from farmhand.worker.blender.discovery import BlenderNotFound
from farmhand.worker.cache import parse_size
from farmhand.worker.ffmpeg import FfmpegNotFound
from farmhand.worker.identity import WorkDirError


def default_name() -> str:
    """The host name, cut to what a runner name may hold."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return (name.lstrip("._-") or "worker")[:100]


WORKER_NAME = TypeAdapter(Annotated[str, RunnerRegister.model_fields["name"]])
"""The manager's rule for a worker's name (it registers under it), checked at start."""


def _checked_name(name: str) -> str:
    """The worker's name, or exit 2 saying what a name may be: said at start, not when
    the worker registers, and before the name becomes a folder (`worker-NAME`)."""
    try:
        return WORKER_NAME.validate_python(name)
    except ValidationError:
        typer.echo(
            f"error: --name {name!r}: a worker name is 1-100 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit",
            err=True,
        )
        raise typer.Exit(2) from None


def _checked_token(token: str) -> str:
    """The registration token, or exit 2 if no manager could accept it (`token_problem`)."""
    problem = token_problem(token)
    if problem is not None:
        typer.echo(
            f"error: the runner registration token (--token / FARMHAND_RUNNER_TOKEN) is not "
            f"a valid farmhand token: {problem}",
            err=True,
        )
        raise typer.Exit(2)
    return token


def _checked_tags(tags: list[str]) -> list[str]:
    try:
        return WorkerCapabilities(tags=tags).tags
    except ValidationError:
        typer.echo(
            f"error: tags must be lower-case letters, digits, '.', '_' or '-': {tags}", err=True
        )
        raise typer.Exit(2) from None


def _checked_device(device: str) -> str:
    kinds = get_args(DeviceKind)
    if device.upper() not in kinds:
        typer.echo(f"error: --device must be one of {', '.join(kinds)}, not {device!r}", err=True)
        raise typer.Exit(2)
    return device.upper()


def default_work_dir(name: str) -> Path:
    return Path.home() / ".cache" / "farmhand" / f"worker-{name}"


def worker(
    manager: Annotated[
        str, typer.Option("--manager", envvar="FARMHAND_URL", help="Manager URL.")
    ] = "http://localhost:8080",
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="FARMHAND_RUNNER_TOKEN",
            help="Runner registration token (only needed the first time).",
            show_default=False,
        ),
    ] = "",
    name: Annotated[
        str | None, typer.Option(help="Worker name (default: host name).", show_default=False)
    ] = None,
    blender: Annotated[
        list[str] | None,
        typer.Option(
            "--blender",
            metavar="[V=]PATH",
            help="A Blender to render with: a path, `bpy`, or VERSION=PATH such as "
            "5.0=/opt/blender-5.0/blender; repeat to offer several (default: "
            "$FARMHAND_BLENDER, then `blender` on PATH, then bpy).",
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            metavar="KIND",
            help="Cycles device: CPU, CUDA, OPTIX, HIP, ONEAPI or METAL (checked at start).",
        ),
    ] = "CPU",
    gpu: Annotated[
        int | None,
        typer.Option(
            "--gpu",
            min=0,
            help="Only this GPU of --device: one worker per GPU (default name HOST-gpuN).",
        ),
    ] = None,
    task_timeout: Annotated[
        float | None,
        typer.Option(
            "--task-timeout",
            min=1.0,
            metavar="SECONDS",
            help="Kill a Blender that neither prints nor uses CPU this long, and fail the "
            "task (default: the manager's).",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=0, help="Render threads (default: all cores).")
    ] = None,
    ffmpeg: Annotated[
        str | None,
        typer.Option(
            envvar="FARMHAND_FFMPEG",
            help="ffmpeg for video tasks (default: found on PATH; none: no video tasks).",
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Cache, job files, logs (default: ~/.cache/farmhand/worker-NAME)."),
    ] = None,
    heartbeat_interval: Annotated[float, typer.Option(min=0.1)] = 5.0,
    poll_wait: Annotated[float, typer.Option(min=0.0, max=60.0)] = 20.0,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            envvar="FARMHAND_CA_BUNDLE", help="CA bundle to verify the manager's TLS certificate."
        ),
    ] = None,
    insecure: Annotated[bool, typer.Option(help="Do not verify TLS (testing only).")] = False,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="A tag jobs may require, e.g. gpu (repeat for more)."),
    ] = None,
    session_frames: Annotated[
        int,
        typer.Option(
            min=1, help="Start a fresh Blender after this many frames in one job's session."
        ),
    ] = 500,
    session_memory: Annotated[
        int | None,
        typer.Option(
            "--session-memory",
            min=1,
            metavar="MB",
            help="Start a fresh Blender once the session's resident memory passes this "
            "(default: no limit).",
        ),
    ] = None,
    no_sessions: Annotated[
        bool,
        typer.Option(
            "--no-sessions",
            help="Start one Blender per task instead of keeping it running for the job.",
        ),
    ] = False,
    cache_size: Annotated[
        str | None,
        typer.Option(
            "--cache-size",
            metavar="SIZE",
            help="Largest size of the file cache, e.g. 20G or 500M; least recently used "
            "files go first (default: no limit).",
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            help="This machine's platform name for shared-storage paths "
            "(default: linux, windows or darwin).",
            show_default=False,
        ),
    ] = None,
    path_map: Annotated[
        list[str] | None,
        typer.Option(
            "--path-map",
            metavar="[VARIABLE:]PLATFORM=ROOT",
            help="Where a shared-storage variable is mounted, e.g. projects:linux=/mnt/projects "
            "or linux=/mnt/projects (variable 'shared'); repeat for more. Over the manager's.",
        ),
    ] = None,
    register_again: Annotated[
        bool,
        typer.Option(
            "--register-again",
            help="Throw this worker's stored identity away and register as a new runner "
            "with the registration token: how a runner an admin deleted (which otherwise "
            "exits with code 3) is put back on the farm.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run a worker: register, then render tasks until stopped (Ctrl-C / SIGTERM)."""
    configure_logging("worker", log_level.upper())
    # One worker per GPU on one machine: each needs its own name (and so work dir).
    worker_name = _checked_name(name or default_name() + (f"-gpu{gpu}" if gpu is not None else ""))
    verify: bool | str = str(ca_bundle) if ca_bundle else not insecure
    try:
        cache_bytes = parse_size(cache_size) if cache_size is not None else None
    except ValueError as error:
        typer.echo(f"error: --cache-size: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        path_table = parse_path_maps(path_map or [])
    except PathMapError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    settings = WorkerSettings(
        manager_url=manager.rstrip("/"),
        registration_token=_checked_token(token),
        name=worker_name,
        work_dir=(work_dir or default_work_dir(worker_name)).expanduser(),
        blenders=list(blender or []),
        device=_checked_device(device),
        gpu=gpu,
        task_timeout=task_timeout,
        threads=threads or None,
        heartbeat_interval=heartbeat_interval,
        poll_wait=poll_wait,
        verify=verify,
        tags=_checked_tags(tag or []),
        sessions=not no_sessions,
        session_frames=session_frames,
        session_memory_mb=session_memory,
        cache_size=cache_bytes,
        platform=platform or current_platform(),
        path_map=path_table,
        ffmpeg=ffmpeg,
        register_again=register_again,
    )
    try:
        code = run_worker(settings)
    except (BlenderNotFound, FfmpegNotFound, WorkDirError) as error:
        # Said at start, not at the first task: a worker that cannot render takes no work.
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)
