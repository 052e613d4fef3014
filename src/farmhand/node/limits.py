"""Body limits of the tutorial's servers (`farmhand node`, `farmhand orchestrator`).

Both take one tiny JSON object (`{"from": 1, "to": 5}`), so a body of more than
`MAX_BODY_BYTES` is refused with 413 before it is read into memory (from its
`Content-Length`, or as soon as a chunked body passes the limit), and a body nesting
deeper than `MAX_JSON_DEPTH` with 400 before a parser sees it: Python's `json` recurses
per level, and FastAPI would turn the RecursionError of `[[[[…]]]]` into its own JSON
error, not the server's documented answer. Each server words and shapes the refusal in
its own documented style (`refuse`); the limits themselves live here, once.

A body that stops arriving is cut off as the manager's are (its `watched_body`): no byte
for `idle_timeout` seconds (`--client-timeout`) is a 408 and the connection is closed.
A request's head has its own deadline, in the server's protocol
(`farmhand.manager.connections`, started by the commands).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from farmhand.manager.api.limits import (
    BodyTimeout,
    BodyTooLarge,
    JsonTooDeep,
    check_json,
    declared_length,
    read_all_body,
    replay_body,
    watched_body,
)

MAX_BODY_BYTES = 64 * 1024
"""Far above any request of the contract (about 20 bytes), far below what hurts."""
MAX_JSON_DEPTH = 32
"""The contract's body nests one level; the manager allows 32 by default too."""

Refuse = Callable[[int, str], Response]
"""`(status, problem) -> response`: 413 for a body too large, 400 for one too deep, 408
for one that stopped arriving."""


def too_large_problem() -> str:
    return f"the request body is larger than {MAX_BODY_BYTES} bytes ({MAX_BODY_BYTES // 1024} KiB)"


def too_deep_problem() -> str:
    return f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"


class BodyLimitMiddleware:
    """Refuse oversized, too deeply nested or stalled request bodies before any route
    reads them."""

    def __init__(self, app: ASGIApp, refuse: Refuse, idle_timeout: float | None = None) -> None:
        self.app = app
        self.refuse = refuse
        self.idle_timeout = idle_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > MAX_BODY_BYTES:
            await self._answer(413, too_large_problem(), scope, receive, send)
            return
        watched = watched_body(receive, MAX_BODY_BYTES, "request body", self.idle_timeout)
        try:
            body = await read_all_body(watched, MAX_BODY_BYTES, "request body")
        except BodyTooLarge:
            await self._answer(413, too_large_problem(), scope, receive, send)
            return
        except BodyTimeout as timeout:
            await self._answer(408, str(timeout.detail), scope, receive, send)
            return
        except ClientDisconnect:
            return  # nobody to answer; a partial body is not checked
        try:
            check_json(body, MAX_JSON_DEPTH)  # the manager's check, answered the node's way
        except JsonTooDeep:
            await self._answer(400, too_deep_problem(), scope, receive, send)
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _answer(
        self, status: int, problem: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = self.refuse(status, problem)
        if status in (408, 413):
            response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)
