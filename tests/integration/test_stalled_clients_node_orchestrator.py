"""`farmhand node` and `farmhand orchestrator` close connections that never finish a request.

Both listen on every address and need no token, so anyone who can reach them could hold
a file descriptor per idle socket for ever: a head stopped halfway, a connection that
says nothing, a body that stops arriving. Each server runs here as its own process with
`--client-timeout 2`, and raw sockets leave requests unfinished as an attacker (or a
client whose network died) would. Each must be answered `408` in the server's own style
(the node's plain text, the orchestrator's `{"detail": …}`), or closed if no request
began, and keep serving everyone else. A body that keeps moving is not a stalled one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.test_stalled_clients import until_closed as manager_until_closed

TIMEOUT = 2.0
"""The servers' `--client-timeout` in these tests."""
LATE = TIMEOUT + 10
"""Generous: a stalled connection still open this long after its last byte was not timed
out (the machine running the tests may be busy)."""


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    post: str
    """The route taking a JSON body."""

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=LATE)

    def detail(self, answer: bytes) -> str:
        """What the answer says, in the server's style."""
        head, _, body = answer.partition(b"\r\n\r\n")
        if self.name == "node":
            assert b"content-type: text/plain" in head.lower(), answer
            return body.decode()
        assert b"content-type: application/json" in head.lower(), answer
        return str(json.loads(body)["detail"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(name: str, args: list[str], log_dir: Path) -> Iterator[int]:
    """`python -m farmhand {name} …` with a 2 s client timeout; its port once it answers."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "farmhand", name, *args, "--host", "127.0.0.1",
             "--port", str(port), "--client-timeout", str(TIMEOUT)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    break
                except httpx.TransportError:
                    assert child.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, f"{name} never started listening"
                    time.sleep(0.2)
            yield port
        finally:
            child.terminate()
            child.wait(20)


@pytest.fixture(scope="module", params=["node", "orchestrator"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "node":
        # The node checks at start that its Blender runs; these tests render nothing.
        blender = folder / "blender"
        blender.write_text("#!/bin/sh\necho 'Blender 4.2.0'\n")
        blender.chmod(0o755)
        (folder / "scene.blend").write_bytes(b"BLENDER-v402")
        args = ["--blend", str(folder / "scene.blend"), "--output", str(folder / "out"),
                "--blender", str(blender)]  # fmt: skip
        post = "/job"
    else:
        args = ["--node", "http://127.0.0.1:9"]  # nothing is rendered either
        post = "/render"
    with serving(request.param, args, folder) as port:
        yield Server(request.param, port, post)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the manager's test's
    reading, which fails if it is still open `LATE` seconds after the client's last byte)."""
    return manager_until_closed(sock)[0]


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def head(method: str, path: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", *headers, "", ""]).encode()


def test_a_head_stopped_halfway_is_answered_408_and_closed(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: never ends
    answer = until_closed(sock)
    assert status_of(answer) == 408
    assert b"connection: close" in answer.lower()
    assert "the request's headers did not arrive in time" in server.detail(answer)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    assert until_closed(server.connect()) == b""  # no request began: nothing to answer


def test_a_stalled_body_is_answered_408_and_closed(server: Server) -> None:
    """The report's case: `Content-Length: 100`, one byte of body, then silence."""
    sock = server.connect()
    sock.sendall(
        head("POST", server.post, "Content-Type: application/json", "Content-Length: 100") + b"{"
    )
    answer = until_closed(sock)
    assert status_of(answer) == 408
    assert b"connection: close" in answer.lower()
    assert f"the request body stopped arriving: nothing for {TIMEOUT:g} s" in server.detail(answer)


def test_many_stalled_connections_are_closed_while_others_are_served(server: Server) -> None:
    stalled = []
    for n in range(60):
        sock = server.connect()
        if n % 3 == 1:
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Le")
        elif n % 3 == 2:
            sock.sendall(
                head("POST", server.post, "Content-Type: application/json", "Content-Length: 9")
                + b"[1"
            )
        stalled.append(sock)
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=LATE) as client:
        for _ in range(5):
            assert client.get("/metrics").status_code == 200
    answers = [until_closed(sock) for sock in stalled]
    assert answers[0::3] == [b""] * 20
    assert [status_of(answer) for answer in answers[1::3]] == [408] * 20
    assert [status_of(answer) for answer in answers[2::3]] == [408] * 20


def test_a_slow_body_that_keeps_moving_is_read_to_its_end(server: Server) -> None:
    """A byte every 0.2 timeouts, for 2.5 timeouts in all: the timeout is idle, not total.
    The body is read whole (and refused as a range that runs backwards), not cut off."""
    body = b'{"from": 5, "to":   1}'

    def slowly() -> Iterator[bytes]:
        for piece in (body[i : i + 2] for i in range(0, len(body), 2)):
            yield piece
            time.sleep(TIMEOUT * 0.2)

    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=LATE) as client:
        answer = client.post(
            server.post, content=slowly(), headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 400, answer.text
