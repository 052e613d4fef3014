"""`farmhand manager`: run the manager (API, scheduler, reaper) with Uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from farmhand.manager.app import create_app, prepare
from farmhand.manager.settings import ManagerSettings
from farmhand.shared.logconfig import configure_logging


def manager(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
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
        float, typer.Option(help="Seconds of silence before a worker is offline.")
    ] = 30.0,
    max_attempts: Annotated[int, typer.Option(help="Failures before a task fails for good.")] = 3,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the manager: REST API, scheduler and the worker-health reaper."""
    configure_logging("manager", log_level.upper())
    console = Console(stderr=True)
    settings = ManagerSettings.from_env(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        heartbeat_timeout=heartbeat_timeout,
        max_attempts=max_attempts,
    )
    context, report = prepare(settings)
    if report.created_admin:
        console.print("[bold]First start:[/] created the admin account.")
    console.print(f"Admin API token:            {report.admin_token_file.resolve()}")
    console.print(f"Runner registration token:  {report.runner_token_file.resolve()}")
    console.print(f"farmhand manager listening on http://{host}:{port} (API docs: /docs)")
    app = create_app(settings, context)
    # Workers keep connections open between heartbeats and long polls; closing idle ones
    # after uvicorn's default 5 s makes clients race the close and reconnect all the time.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        timeout_keep_alive=75,
        # Open live streams (SSE) must not hold a stopping manager up.
        timeout_graceful_shutdown=3,
    )
