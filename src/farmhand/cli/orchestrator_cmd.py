"""`farmhand orchestrator`: split frame ranges into batches and spread them over nodes.

See docs/ORCHESTRATOR.md. Registered on the `farmhand` app by the CLI module.
"""

from __future__ import annotations

from typing import Annotated

import typer

from farmhand.cli.options import client_timeout_option, port_option
from farmhand.shared.timeouts import CLIENT_TIMEOUT


def _node_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        typer.echo(f"error: --node {url!r}: give a URL such as http://host:3000", err=True)
        raise typer.Exit(2)
    return url.rstrip("/")


def orchestrator(
    node: Annotated[
        list[str],
        typer.Option("--node", help="A `farmhand node` URL (repeat for more).", show_default=False),
    ],
    port: Annotated[int, port_option()] = 4000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
    batch: Annotated[int, typer.Option(min=1, help="Frames per batch sent to one node.")] = 10,
    max_frames: Annotated[
        int, typer.Option(min=1, help="Most frames one render may ask.")
    ] = 10_000,
    max_active: Annotated[
        int, typer.Option(min=1, help="Renders at once; past this POST /render answers 503.")
    ] = 4,
    rate_limit: Annotated[
        int, typer.Option(min=1, help="Renders one client may start per --rate-window (429).")
    ] = 30,
    rate_window: Annotated[float, typer.Option(min=0.1, help="Seconds.")] = 60.0,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="Failed attempts before a batch (and its render) fails.")
    ] = 3,
    retry_after: Annotated[
        int, typer.Option(min=0, help="Seconds clients are told to wait between polls.")
    ] = 5,
    max_poll_interval: Annotated[
        float, typer.Option(min=0.05, help="Poll nodes at least this often (seconds).")
    ] = 5.0,
    client_timeout: Annotated[float, client_timeout_option()] = CLIENT_TIMEOUT,
) -> None:
    """Serve POST /render {"from": 1, "to": 250}, then GET /status/{id}, over several nodes."""
    import uvicorn  # here: every `farmhand` command imports this module

    from farmhand.manager.connections import head_timeout_protocol, raise_open_files_limit
    from farmhand.orchestrator.app import OrchestratorSettings, create_orchestrator_app

    settings = OrchestratorSettings(
        nodes=tuple(_node_url(url) for url in node),
        batch_size=batch,
        max_frames=max_frames,
        max_active=max_active,
        retry_after=retry_after,
        rate_limit=rate_limit,
        rate_window=rate_window,
        max_attempts=max_attempts,
        max_poll_interval=max_poll_interval,
        client_timeout=client_timeout,
    )
    typer.echo(
        f"farmhand orchestrator: {len(settings.nodes)} node(s), batches of {batch}; "
        f"http://{host}:{port}/render",
        err=True,
    )
    # Every connection is a file: take the room this account is allowed.
    raise_open_files_limit()
    uvicorn.run(
        create_orchestrator_app(settings),
        host=host,
        port=port,
        log_level="info",
        # Uvicorn's own protocol, plus a deadline for a request's headers (the body's is
        # the app's): uvicorn has none, so a stalled connection would stay open.
        http=head_timeout_protocol(client_timeout),
    )
