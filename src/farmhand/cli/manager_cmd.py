"""`farmhand manager`: run the manager (API, scheduler, reaper) with Uvicorn.

TLS is Uvicorn's own (`--ssl-certfile/--ssl-keyfile`); behind a reverse proxy that
terminates TLS, `--proxy-headers --forwarded-allow-ips <proxy>` makes the client's
address and scheme the real ones. See docs/SECURITY.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from farmhand.cli.folders import FolderError, check_writable_folder, why
from farmhand.cli.options import port_option
from farmhand.cli.shown import shown
from farmhand.manager.settings import ManagerSettings, SettingsError
from farmhand.shared.logconfig import (
    configure_logging,
    json_lines_wanted,
    uvicorn_log_config_file,
)


def _refuse(message: str) -> typer.Exit:
    """One red line on stderr, exit 1: the manager does not start."""
    Console(stderr=True).print(
        f"[red]error:[/red] {shown(message)}", highlight=False, soft_wrap=True
    )
    return typer.Exit(1)


def manager(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, port_option()] = 8080,
    data_dir: Annotated[
        Path, typer.Option(help="SQLite database, blob store and logs.", envvar="FARMHAND_DATA_DIR")
    ] = Path("farmhand-data"),
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL (default: SQLite in the data dir).", envvar="FARMHAND_DATABASE_URL"
        ),
    ] = None,
    heartbeat_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="FARMHAND_HEARTBEAT_TIMEOUT",
            min=1,
            help="Seconds of silence before a worker is offline and its task goes back to "
            f"the queue. [default: {ManagerSettings.heartbeat_timeout:g}]",
            show_default=False,
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            envvar="FARMHAND_MAX_ATTEMPTS",
            min=1,
            max=100,
            help="Failures before a task fails for good (a job may set its own). "
            f"[default: {ManagerSettings.max_attempts}]",
            show_default=False,
        ),
    ] = None,
    blocklist_threshold: Annotated[
        int | None,
        typer.Option(
            envvar="FARMHAND_BLOCKLIST_THRESHOLD",
            min=1,
            max=1000,
            help="Failed tasks of one job after which a worker gets no more of that job's "
            f"tasks. [default: {ManagerSettings.blocklist_threshold}]",
            show_default=False,
        ),
    ] = None,
    job_failure_share: Annotated[
        float | None,
        typer.Option(
            envvar="FARMHAND_JOB_FAILURE_SHARE",
            min=0,
            max=1,
            help="Share of a job's tasks that may fail for good before the job fails early "
            f"(0: at the first). [default: {ManagerSettings.job_failure_share:g}]",
            show_default=False,
        ),
    ] = None,
    task_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="FARMHAND_TASK_TIMEOUT",
            min=1,
            help="Seconds without word (progress or log) from a task's worker before the "
            f"task fails and is retried. [default: {ManagerSettings.task_timeout:g}]",
            show_default=False,
        ),
    ] = None,
    forgotten_task_after: Annotated[
        float | None,
        typer.Option(
            envvar="FARMHAND_FORGOTTEN_TASK_AFTER",
            min=0,
            help="A worker asking for work while the manager counts a task as its own, "
            "handed out longer ago than this, gets that task requeued (not a failure). "
            f"[default: {ManagerSettings.forgotten_task_after:g}]",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            envvar="FARMHAND_SSL_CERTFILE",
            help="Serve HTTPS with this certificate (PEM, with its chain).",
            show_default=False,
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(
            envvar="FARMHAND_SSL_KEYFILE",
            help="The certificate's private key (PEM).",
            show_default=False,
        ),
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            envvar="FARMHAND_PROXY_HEADERS",
            help="Trust X-Forwarded-For/-Proto from the addresses of --forwarded-allow-ips "
            "(behind a reverse proxy).",
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            envvar="FARMHAND_FORWARDED_ALLOW_IPS",
            help="Comma-separated proxy addresses (or networks) whose X-Forwarded-* "
            "headers are believed; '*' trusts everyone, only safe if no one else can connect.",
        ),
    ] = "127.0.0.1",
    max_upload_bytes: Annotated[
        int | None,
        typer.Option(
            envvar="FARMHAND_MAX_UPLOAD_BYTES", min=1, help="Largest single upload (413 above)."
        ),
    ] = None,
    user_quota_bytes: Annotated[
        int | None,
        typer.Option(
            envvar="FARMHAND_USER_QUOTA_BYTES",
            min=1,
            help="Storage each user's jobs may use (413 above; default: no quota).",
        ),
    ] = None,
    client_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="FARMHAND_CLIENT_TIMEOUT",
            min=1,
            help="Seconds a client has to send a request's headers, and the longest a "
            "request body may stop arriving (between its chunks, not in total): the "
            "connection is closed with a 408 past either. "
            f"[default: {ManagerSettings.client_timeout:g}]",
            show_default=False,
        ),
    ] = None,
    max_connections_per_address: Annotated[
        int | None,
        typer.Option(
            envvar="FARMHAND_MAX_CONNECTIONS_PER_ADDRESS",
            min=0,
            max=1_000_000,
            help="Connections one client address may hold open at once (per server "
            "process); past it a new one is answered 503 and closed (0: no limit). "
            f"[default: {ManagerSettings.max_connections_per_address}]",
            show_default=False,
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            envvar="FARMHAND_MANAGER_PROCESSES",
            min=1,
            max=64,
            help="Server processes on one port, database and data dir (one uses one core). "
            "With SQLite they must share this machine.",
        ),
    ] = 1,
) -> None:
    """Run the manager: REST API, scheduler and the worker-health reaper."""
    # Here, not at the top: every `farmhand` command imports this module, and the web
    # app (FastAPI, every route, OAuth) takes a second to import that `farmhand job`,
    # and the Blender add-on that runs it, would pay for nothing.
    import uvicorn

    from farmhand.manager.app import PROCESS_SETTINGS, create_app, prepare
    from farmhand.manager.connections import (
        HEAD_TIMEOUT_VARIABLE,
        PER_ADDRESS_VARIABLE,
        head_timeout_protocol,
        raise_open_files_limit,
    )
    from farmhand.manager.db.presence import StartRefused
    from farmhand.manager.heap import freeze_startup_objects
    from farmhand.manager.supervision import cannot_listen

    configure_logging("manager", log_level.upper(), traced=True)
    console = Console(stderr=True)
    tls = check_tls(ssl_certfile, ssl_keyfile)
    if (busy := cannot_listen(host, port)) is not None:
        raise _refuse(busy)  # before "listening on …" is printed, and before prepare()
    flags: dict[str, object] = {
        "data_dir": str(data_dir),
        "database_url": database_url,
        "host": host,
        "port": port,
        "processes": processes,
        "heartbeat_timeout": heartbeat_timeout,
        "max_attempts": max_attempts,
        "blocklist_threshold": blocklist_threshold,
        "job_failure_share": job_failure_share,
        "task_timeout": task_timeout,
        "forgotten_task_after": forgotten_task_after,
        "max_upload_bytes": max_upload_bytes,
        "user_quota_bytes": user_quota_bytes,
        "client_timeout": client_timeout,
        "max_connections_per_address": max_connections_per_address,
    }
    try:
        settings = ManagerSettings.from_flags(flags)
    except SettingsError as error:
        raise _refuse(str(error)) from None
    try:
        # Asked first: prepare() fails deep in its start-up on a data dir it cannot use,
        # and a folder inside it that cannot be written fails only the first request
        # that writes there (a 500 on the first upload).
        for folder in folders_written(settings):
            check_writable_folder(folder)
        context, report = prepare(settings)
    except FolderError as error:
        raise _refuse(f"the data dir cannot be used: {error}") from None
    except StartRefused as error:
        raise _refuse(str(error)) from None
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise _refuse(
            f"the data dir {settings.data_dir} cannot be used{where}: {why(error)}"
        ) from None
    scheme = "https" if tls[0] else "http"
    if json_lines_wanted():
        # A log pipeline reads every line as JSON: the banner is an event, its parts fields.
        import structlog

        structlog.get_logger().info(
            "manager starting",
            url=f"{scheme}://{host}:{port}",
            admin_token_file=str(report.admin_token_file.resolve()),
            runner_token_file=str(report.runner_token_file.resolve()),
            created_admin=report.created_admin,
            processes=processes,
        )
    else:
        if report.created_admin:
            console.print("[bold]First start:[/] created the admin account.")
        console.print(f"Admin API token:            {shown(report.admin_token_file.resolve())}")
        console.print(f"Runner registration token:  {shown(report.runner_token_file.resolve())}")
        console.print(
            f"farmhand manager listening on {scheme}://{host}:{port} (web UI: /, API docs: /docs)"
        )
        if this_machine_only(host):
            console.print(
                "Only this machine can reach it: for workers on other machines, start it "
                "with --host 0.0.0.0 (or this machine's address)."
            )
    # Workers keep connections open between heartbeats and long polls; closing idle ones
    # after uvicorn's default 5 s makes clients race the close and reconnect all the time.
    server = ServerOptions(
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_keep_alive=75,
        # Open live streams (SSE) must not hold a stopping manager up.
        timeout_graceful_shutdown=3,
        # Off unless asked: a manager reached directly must not believe X-Forwarded-For
        # from anyone (rate limits and logs key on the client's address).
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips if proxy_headers else None,
        ssl_certfile=tls[0],
        ssl_keyfile=tls[1],
        # Uvicorn's own lines formatted as farmhand's (JSON with FARMHAND_LOG_JSON).
        log_config=str(
            uvicorn_log_config_file(
                settings.data_dir / "run", "manager", log_level.upper(), traced=True
            )
        ),
    )
    open_files_limit(raise_open_files_limit)
    if processes == 1:
        app = create_app(settings, context)
        freeze_startup_objects()
        # Uvicorn stops cleanly on SIGTERM, then puts back the handler it found and raises
        # the signal again: with the default one, the manager died "killed by SIGTERM"
        # (status -15), a failure to systemd and supervisors. With this one it exits 0.
        # (`--processes N`: uvicorn's supervisor exits 0 on SIGTERM by itself.)
        signal.signal(signal.SIGTERM, _stopped)
        uvicorn.run(
            app,
            access_log=False,
            # Uvicorn's own protocol, plus a deadline for a request's headers and for a
            # response not read (uvicorn has none: such a connection would stay open),
            # and a limit of connections per client address.
            http=head_timeout_protocol(
                settings.client_timeout, per_address=settings.max_connections_per_address
            ),
            **asdict(server),
        )
        return
    # Uvicorn starts each process by importing the app; they read these settings.
    context.db.dispose()
    os.environ[PROCESS_SETTINGS] = json.dumps({**flags, "log_level": log_level.upper()})
    os.environ[HEAD_TIMEOUT_VARIABLE] = str(settings.client_timeout)
    os.environ[PER_ADDRESS_VARIABLE] = str(settings.max_connections_per_address)
    if not json_lines_wanted():
        console.print(f"{processes} processes")
    # This process becomes a bare uvicorn supervisor (same pid, so signals and service
    # managers reach it): it only starts and watches the servers, and need not keep the
    # web app, SQLAlchemy and the migrations it imported above (117 MB against 25 MB).
    sys.stdout.flush()
    sys.stderr.flush()
    # An argument list, no shell: the flags reach uvicorn as they were given.
    os.execv(sys.executable, [sys.executable, *supervisor_command(server, processes)])  # noqa: S606


LOW_OPEN_FILES = 1024
"""Below this many open files a farm's manager is warned at start: every connection (a
worker holds up to about five, a browser tab about seven), every database connection
and every file being sent or stored takes one."""


def open_files_limit(raise_limit: Callable[[], int | None]) -> int | None:
    """Raise the soft limit of open files to the hard one (`raise_limit`, the server
    processes inherit it) and warn if it is still low for a farm; the limit now.

    Raising the soft limit is what servers commonly do at start (nginx, PostgreSQL,
    Go's runtime since 1.19): systemd's default is a soft 1,024 under a hard 524,288
    precisely so that programs needing more take it themselves, while select()-based
    ones keep the old ceiling. Past the limit the manager accepts no connection and
    opens no file: clients are left waiting, with nothing said unless the log says it,
    so a hard limit too low to raise from is said at start, with what to do."""
    limit = raise_limit()
    if limit is not None and limit < LOW_OPEN_FILES:
        import structlog

        structlog.get_logger("farmhand.manager").warning(
            f"open files limit is low for a farm ({limit}; under {LOW_OPEN_FILES}): past "
            "it connections wait unanswered and requests are refused (503). Raise the hard "
            "limit (ulimit -Hn, LimitNOFILE= under systemd, --ulimit nofile= for Docker)",
            limit=limit,
        )
    return limit


def _stopped(signum: int, frame: FrameType | None) -> NoReturn:
    """A SIGTERM outside uvicorn's own handling (the one it raises again once stopped):
    a requested stop, so a clean exit."""
    raise SystemExit(0)


def this_machine_only(host: str) -> bool:
    """Whether a manager listening on `host` is out of every other machine's reach: the
    default, 127.0.0.1, which a newcomer's second machine then cannot join."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, the operator chose it


def folders_written(settings: ManagerSettings) -> list[Path]:
    """The folders a running manager writes files into, each checked at start: the data
    dir (tokens, session key, SQLite), the blob store's hashes and the temporary area
    uploads are staged and resumed in (`storage/blobs.py`, `storage/partial_uploads.py`),
    task logs, the thumbnail cache, and with several processes their sockets. Folders
    made below these as needed (`blobs/sha256/ab`, `logs/job-7`) are not: there may be
    thousands, and each is made by the manager, with its mode."""
    from farmhand.manager.siblings import siblings_dir
    from farmhand.manager.storage.thumbnail_cache import cache_dir

    blobs = settings.blob_dir
    folders = [
        settings.data_dir,
        blobs,
        blobs / "sha256",
        blobs / "tmp",
        blobs / "tmp" / "partial",
        settings.log_dir,
        cache_dir(settings.data_dir),
    ]
    if settings.processes > 1:
        folders.append(siblings_dir(settings.data_dir))
    return folders


@dataclass(frozen=True)
class ServerOptions:
    """What uvicorn is told, whether it is called in this process or as the supervisor of
    several: one list, so the two ways cannot drift apart."""

    host: str
    port: int
    log_level: str
    timeout_keep_alive: int
    timeout_graceful_shutdown: int
    proxy_headers: bool
    forwarded_allow_ips: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    log_config: str | None = None


def supervisor_command(server: ServerOptions, processes: int) -> list[str]:
    """`python -m uvicorn` arguments running `processes` servers of the manager's app."""
    from farmhand.manager.connections import PROCESS_PROTOCOL

    command = [
        "-m", "uvicorn", "farmhand.manager.app:app_from_environment", "--factory",
        "--workers", str(processes), "--host", server.host, "--port", str(server.port),
        "--log-level", server.log_level, "--no-access-log",
        "--timeout-keep-alive", str(server.timeout_keep_alive),
        "--timeout-graceful-shutdown", str(server.timeout_graceful_shutdown),
        "--proxy-headers" if server.proxy_headers else "--no-proxy-headers",
        # Its timeout and per-address limit come from the environment
        # (HEAD_TIMEOUT_VARIABLE, PER_ADDRESS_VARIABLE).
        "--http", PROCESS_PROTOCOL,
    ]  # fmt: skip
    for flag, value in (
        ("--forwarded-allow-ips", server.forwarded_allow_ips),
        ("--ssl-certfile", server.ssl_certfile),
        ("--ssl-keyfile", server.ssl_keyfile),
        ("--log-config", server.log_config),
    ):
        if value is not None:
            command += [flag, value]
    return command


def check_tls(certfile: Path | None, keyfile: Path | None) -> tuple[str | None, str | None]:
    """Uvicorn's TLS arguments, or a clear error (not a traceback) if they cannot work."""
    if certfile is None and keyfile is None:
        return None, None
    if certfile is None:
        raise typer.BadParameter("--ssl-keyfile needs --ssl-certfile", param_hint="--ssl-certfile")
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint=option)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as error:
        raise typer.BadParameter(
            f"cannot use {certfile} (key {keyfile or 'in the same file'}): {error}",
            param_hint="--ssl-certfile/--ssl-keyfile",
        ) from None
    return str(certfile), str(keyfile) if keyfile is not None else None
