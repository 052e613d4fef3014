"""Options several commands share, so each is checked the same way everywhere."""

from __future__ import annotations

from typing import Any

import typer

MAX_PORT = 65535


def port_option(help: str = "Port to listen on.", *, any_free: bool = False) -> Any:
    """A TCP port, 1-65535 (`any_free`: 0 too, for "pick a free one").

    Checked by the command line parser: the OS takes a port modulo 65536, so `--port
    99999` would serve on 34463 while the command prints 99999. A server command allows
    no 0 either: it prints the URL it was given, and workers must be told a real port.
    """
    return typer.Option(min=0 if any_free else 1, max=MAX_PORT, help=help)


def client_timeout_option() -> Any:
    """`--client-timeout` of the node and the orchestrator: the manager's protection
    against clients that stall (manager/connections.py), said the same way."""
    return typer.Option(
        min=1,
        help="Seconds a client has to send a request's headers, and the longest a "
        "request body may stop arriving: the connection is closed with a 408 past "
        "either (as the manager's --client-timeout).",
    )
