"""One client address may hold only so many connections; the others are still served.

A real manager (`--max-connections-per-address 20`) and raw sockets from 127.0.0.1, as
a host opening connections faster than they time out would leave them. Past the limit a
new connection is answered `503` with `Retry-After` and closed at once, logged once for
the whole episode, not once a connection; once the address lets go of its connections
it is served again. Connections from a trusted proxy are not counted (the proxy counts
its clients), and several server processes each have the limit.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from farmhand.localfarm import LocalFarm, local_farm

LIMIT = 20
LATE = 30.0
"""Generous: how long a connection may take to be answered or closed."""
REFUSING = "refusing connections from one address"
ACCEPTING = "accepting connections from the address again"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with local_farm(tmp_path_factory.mktemp("per-address")) as farm:
        farm.start_manager("--max-connections-per-address", str(LIMIT))
        yield farm


def manager_log(farm: LocalFarm) -> str:
    assert farm.manager is not None
    return farm.manager.log_path.read_text(encoding="utf-8", errors="replace")


def held_connection(farm: LocalFarm, stack: ExitStack) -> socket.socket:
    """A connection the manager has taken and keeps (it answered a request on it, and
    keeps it alive for the next)."""
    sock = stack.enter_context(socket.create_connection((farm.host, farm.port), timeout=LATE))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return sock


def refused_answer(farm: LocalFarm) -> bytes:
    """What a new connection that sends a request gets before the manager closes it."""
    with socket.create_connection((farm.host, farm.port), timeout=LATE) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def lines(farm: LocalFarm, since: int, text: str) -> list[str]:
    return [line for line in manager_log(farm)[since:].splitlines() if text in line]


def test_past_the_limit_a_connection_is_refused_503_and_logged_once(farm: LocalFarm) -> None:
    since = len(manager_log(farm))
    with ExitStack() as stack:
        for _ in range(LIMIT):
            held_connection(farm, stack)
        answers = [refused_answer(farm) for _ in range(5)]
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), answer
            assert b"retry-after: 5" in head.lower()
            detail = json.loads(body)["detail"]
            assert f"allows {LIMIT} at once" in detail
        # A client library sees the answer too (not a reset connection).
        refused = httpx.get(farm.url + "/healthz", timeout=LATE)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        (warning,) = lines(farm, since, REFUSING)
        assert "[warning" in warning and "address=127.0.0.1" in warning
        assert f"limit={LIMIT}" in warning
    # The address let go of its connections: it is served again.
    deadline = time.monotonic() + LATE
    while not lines(farm, since, ACCEPTING):
        assert time.monotonic() < deadline, manager_log(farm)[since:]
        time.sleep(0.1)
    (accepting,) = lines(farm, since, ACCEPTING)
    assert "refused=6" in accepting
    assert httpx.get(farm.url + "/healthz", timeout=LATE).status_code == 200
    assert len(lines(farm, since, REFUSING)) == 1


def test_connections_under_the_limit_are_served(farm: LocalFarm) -> None:
    since = len(manager_log(farm))
    with ExitStack() as stack:
        for _ in range(LIMIT - 1):
            held_connection(farm, stack)
        assert httpx.get(farm.url + "/healthz", timeout=LATE).status_code == 200
    assert lines(farm, since, REFUSING) == []


def test_a_trusted_proxy_is_not_counted(tmp_path: Path) -> None:
    """Behind a reverse proxy every client comes from the proxy's address: the manager
    that believes its X-Forwarded-For leaves counting to it."""
    with local_farm(tmp_path) as farm:
        farm.start_manager(
            "--max-connections-per-address", "3",
            "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1",
        )  # fmt: skip
        with ExitStack() as stack:
            for _ in range(6):
                held_connection(farm, stack)
        assert REFUSING not in manager_log(farm)


def test_several_server_processes_each_have_the_limit(tmp_path: Path) -> None:
    """`--processes 2` hands the limit to the processes it starts: each counts the
    connections it took, so 2 x 3 are the most one address holds."""
    with local_farm(tmp_path) as farm:
        farm.start_manager("--processes", "2", "--max-connections-per-address", "3")
        with ExitStack() as stack:
            answers = []
            for _ in range(7):
                sock = stack.enter_context(
                    socket.create_connection((farm.host, farm.port), timeout=LATE)
                )
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n")
                answers.append(sock.recv(4096))
            statuses = [answer.split(b" ", 2)[1] for answer in answers]
            assert statuses.count(b"200") <= 6
            assert b"503" in statuses, statuses
