"""The end of a response left in the server's buffer, unread, does not hold the
connection for ever.

A response's last bytes may stay in the transport's buffer below the mark that pauses
writing, so uvicorn never waits on them; but closing the connection (or keeping it
alive) waits until they are sent, which is never if the client reads no more. The
manager's protocol (`connections.HeadTimeoutProtocol`) watches that buffer too. On a
stand-in transport whose buffer drains only when told (the integration tests fill real
socket buffers, which never leave a tail this small on its own).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from farmhand.manager.connections import head_timeout_protocol

TIMEOUT = 0.05


class Transport(asyncio.Transport):
    """Takes writes into a buffer that drains only by `read`, as a client that stopped
    reading leaves it."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffered += len(data)

    def read(self, size: int) -> None:
        self.buffered -= size

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def close(self) -> None:
        self.closing = True  # a real transport now waits for its buffer to drain

    def abort(self) -> None:
        self.closing = self.aborted = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def small_answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 1000})


def served(client_reads: int) -> Transport:
    """Serve one request closing its connection, then let the client read `client_reads`
    bytes every half timeout, for 10 timeouts (reads and the server's checks are timers
    of one event loop: they run in the order they are due, however busy the machine)."""

    async def run() -> Transport:
        config = Config(small_answer, http="httptools", lifespan="off", access_log=False)
        protocol = head_timeout_protocol(TIMEOUT)(config, ServerState(), {})
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /frame HTTP/1.1\r\nHost: farm\r\nConnection: close\r\n\r\n")
        for _ in range(20):
            await asyncio.sleep(TIMEOUT / 2)
            if transport.aborted:
                break
            transport.read(min(client_reads, transport.buffered))
        return transport

    return asyncio.run(run())


def test_an_end_left_unread_is_cut_off() -> None:
    transport = served(client_reads=0)
    assert transport.closing and transport.aborted, "the connection waits for ever"


def test_an_end_read_slowly_is_not() -> None:
    transport = served(client_reads=50)
    assert transport.closing and not transport.aborted
