"""`farmhand node`: serve the tutorial's rendering node API for one .blend file.

See docs/NODE.md. Registered on the `farmhand` app by the CLI module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from farmhand.cli.options import client_timeout_option, port_option
from farmhand.shared.timeouts import CLIENT_TIMEOUT
from farmhand.worker.blender.discovery import BlenderNotFound, find_blender


def node(
    blend: Annotated[
        Path, typer.Option(help="The .blend file every job renders.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option(help="Where frames go, as blender-render_####.png.", show_default=False)
    ],
    port: Annotated[int, port_option()] = 3000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
    blender: Annotated[
        str | None,
        typer.Option(
            envvar="FARMHAND_BLENDER", help="Blender executable, or `bpy` (default: found)."
        ),
    ] = None,
    max_concurrent: Annotated[
        int, typer.Option(min=1, help="Renders at once; more jobs wait in line.")
    ] = 1,
    queue_limit: Annotated[
        int, typer.Option(min=0, help="Jobs that may wait; past this POST /job answers 503.")
    ] = 16,
    retry_after: Annotated[
        int, typer.Option(min=0, help="Seconds clients are told to wait between polls.")
    ] = 5,
    client_timeout: Annotated[float, client_timeout_option()] = CLIENT_TIMEOUT,
) -> None:
    """Run a rendering node: POST /job {"from": 1, "to": 5}, then poll GET /job/{id}."""
    import uvicorn  # here: every `farmhand` command imports this module

    from farmhand.manager.connections import head_timeout_protocol, raise_open_files_limit
    from farmhand.node.app import HEAD_TIMEOUT_ANSWER, NodeSettings, create_node_app

    if not blend.is_file():
        typer.echo(f"error: {blend} is not a file", err=True)
        raise typer.Exit(2)
    try:
        install = find_blender(blender)
    except BlenderNotFound as error:
        # Said at start, not at the first job: a node that cannot render takes no work.
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    settings = NodeSettings(
        blend=blend.resolve(),
        output=output.resolve(),
        install=install,
        max_concurrent=max_concurrent,
        queue_limit=queue_limit,
        retry_after=retry_after,
        client_timeout=client_timeout,
    )
    typer.echo(
        f"farmhand node: rendering {settings.blend} with Blender {install.version} "
        f"({install.spec}) into {settings.output}; http://{host}:{port}/job",
        err=True,
    )
    # Every connection is a file: take the room this account is allowed.
    raise_open_files_limit()
    uvicorn.run(
        create_node_app(settings),
        host=host,
        port=port,
        log_level="info",
        # Uvicorn's own protocol, plus a deadline for a request's headers (the body's is
        # the app's): uvicorn has none, so a stalled connection would stay open.
        http=head_timeout_protocol(client_timeout, HEAD_TIMEOUT_ANSWER),
    )
