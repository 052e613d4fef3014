"""A minimal HTTP/1.1 keep-alive client for load generators.

The scheduler benchmark runs its simulated workers on the same two cores as the manager,
so whatever the clients spend is taken from the manager. httpx costs a few milliseconds
of CPU per request with hundreds of pooled connections; this costs tens of
microseconds: one connection per simulated worker, requests written as bytes, answers
read by Content-Length. It understands exactly what the manager sends (no chunked
bodies, no redirects) and fails loudly on anything else.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class KeepAliveClient:
    """One persistent connection; one request at a time (like a worker)."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        fixed = {"Host": f"{self.host}:{self.port}", **headers}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Answer:
        try:
            return await self._request(method, path, body, content_type)
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()  # the manager closed an idle connection: once more
            return await self._request(method, path, body, content_type)

    async def _request(
        self, method: str, path: str, body: bytes, content_type: str | None
    ) -> Answer:
        reader, writer = await self._connection()
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._fixed
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n".encode()
        if body or method in ("POST", "PUT"):
            head += f"Content-Length: {len(body)}\r\n".encode()
        writer.write(head + b"\r\n" + body)
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                raise RuntimeError(f"unexpected Transfer-Encoding on {method} {path}")
        payload = await reader.readexactly(length) if length else b""
        return Answer(status, payload)

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    async def post_json(self, path: str, data: Any) -> Answer:
        return await self.request("POST", path, json.dumps(data).encode(), "application/json")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
