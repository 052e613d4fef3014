"""`LimitsMiddleware`'s idle timeout for request bodies, on a bare ASGI app: a body that
stops arriving is a `408` that closes the connection; a body that keeps arriving, or an
app that waits on a finished request (for the client to disconnect), is left alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from farmhand.manager.api.limits import BodyLimits, LimitsMiddleware

IDLE = 0.2
LIMITS = BodyLimits(
    max_body_bytes=1024**2, max_upload_bytes=1024**3, max_json_depth=32, idle_timeout=IDLE
)
SCOPE: Scope = {
    "type": "http",
    "method": "PUT",
    "path": "/api/blobs/" + "0" * 64,
    "headers": [(b"content-type", b"application/octet-stream")],
}


def client(chunks: list[bytes], pause: float, then: Callable[[], Awaitable[Any]]) -> Receive:
    """The body in `chunks`, `pause` seconds apart, then whatever `then` waits for
    before the client disconnects."""
    sent = 0

    async def receive() -> Message:
        nonlocal sent
        if sent < len(chunks):
            if sent:
                await asyncio.sleep(pause)
            sent += 1
            return {
                "type": "http.request",
                "body": chunks[sent - 1],
                "more_body": sent < len(chunks),
            }
        await then()
        return {"type": "http.disconnect"}

    return receive


async def read_body_then_answer(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % len(body)})


def run(app: Callable[[Scope, Receive, Send], Awaitable[None]], receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(LimitsMiddleware(app, LIMITS)(SCOPE, receive, send), 10))
    return sent


def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed() -> None:
    stalls = client([b"a", b"b"], pause=60, then=asyncio.Event().wait)
    start, body = run(read_body_then_answer, stalls)
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"]) == {
        "detail": f"the request body stopped arriving: nothing for {IDLE:g} s"
    }


def test_a_body_that_keeps_arriving_may_take_longer_than_the_timeout_in_all() -> None:
    steady = client([b"x"] * 12, pause=IDLE / 4, then=asyncio.Event().wait)
    start, body = run(read_body_then_answer, steady)
    assert start["status"] == 201
    assert body["body"] == b"12"


def test_an_app_waiting_on_a_finished_request_is_not_cut_off() -> None:
    """What a streamed answer does: wait for the client to go away, however long."""
    got: list[Message] = []

    async def stream_until_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
        while (message := await receive())["type"] != "http.disconnect":
            got.append(message)
        got.append(message)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    later = client([b"whole body"], pause=0, then=lambda: asyncio.sleep(IDLE * 4))
    start, _ = run(stream_until_disconnect, later)
    assert start["status"] == 200
    assert [message["type"] for message in got] == ["http.request", "http.disconnect"]
