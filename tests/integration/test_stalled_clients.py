"""Connections that never finish their request are closed, with or without credentials.

A real manager (`farmhand manager --client-timeout 2`) and raw sockets, as an attacker
(or a client whose network died) would leave them: a head stopped halfway, a connection
that says nothing, a body that stops arriving, on every kind of route (JSON, raw upload,
resumable upload, multipart). Each must be answered `408` (or closed, if no request
began) within the timeout and a margin, free what it held, and not keep other clients
from being served. A slow upload that keeps moving is not a stalled one, however long
it takes in total.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farmhand.localfarm import Child, LocalFarm, local_farm

TIMEOUT = 2.0
"""The manager's `--client-timeout` in these tests."""
LATE = TIMEOUT + 10
"""Generous: a stalled connection still open this long after its last byte was not
timed out (the machine running the tests may be busy)."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with local_farm(tmp_path_factory.mktemp("stalled")) as farm:
        farm.start_manager("--client-timeout", str(TIMEOUT))
        yield farm


def connect(farm: LocalFarm) -> socket.socket:
    sock = socket.create_connection((farm.host, farm.port), timeout=LATE)
    return sock


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the manager sends until it closes the connection, and how many seconds
    that took; fails if it is still open after `LATE` seconds."""
    started = time.monotonic()
    received = b""
    with sock:
        sock.settimeout(LATE)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"still open after {LATE:g} s; received {received[:300]!r}")
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def detail_of(answer: bytes) -> str:
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"])


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: farm", *headers, "", ""]
    return "\r\n".join(lines).encode()


def bearer(farm: LocalFarm) -> str:
    return f"Authorization: Bearer {farm.admin_token}"


def test_a_head_stopped_halfway_is_answered_408_and_closed(farm: LocalFarm) -> None:
    sock = connect(farm)
    sock.sendall(b"GET /api/jobs HTTP/1.1\r\nHo")
    answer, seconds = until_closed(sock)
    assert status_of(answer) == 408
    assert detail_of(answer) == "the request's headers did not arrive in time"
    assert b"connection: close" in answer.lower()
    assert TIMEOUT * 0.75 <= seconds < LATE


def test_a_connection_that_sends_nothing_is_closed(farm: LocalFarm) -> None:
    answer, seconds = until_closed(connect(farm))
    assert answer == b""  # no request began: nothing to answer
    assert TIMEOUT * 0.75 <= seconds < LATE


def test_headers_trickled_byte_by_byte_get_no_more_time(farm: LocalFarm) -> None:
    """The head's deadline is for the whole head, not between its bytes: a client
    sending a header byte now and then would otherwise hold the connection for ever."""
    sock = connect(farm)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    for byte in itertools.cycle(b"X-Slow: a\r\n"):  # a head that never ends
        readable, _, _ = select.select([sock], [], [], TIMEOUT / 8)
        if readable:
            break
        assert time.monotonic() - started < LATE, f"still open after {LATE:g} s"
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
    answer, _ = until_closed(sock)
    assert status_of(answer) == 408
    assert TIMEOUT * 0.75 <= time.monotonic() - started < LATE


def test_the_next_head_on_a_kept_alive_connection_is_timed_too(farm: LocalFarm) -> None:
    sock = connect(farm)
    sock.sendall(head("GET", "/healthz") + b"GET /healthz HTTP/1.1\r\nHo")
    answer, seconds = until_closed(sock)
    first, _, second = answer.partition(b"HTTP/1.1 408")
    assert status_of(first) == 200
    assert second, answer
    assert TIMEOUT * 0.75 <= seconds < LATE


def test_a_stalled_json_body_is_answered_408(farm: LocalFarm) -> None:
    """`Content-Length: 100`, one byte, then silence: to a small JSON route, whose body is
    read before anything else, and to a job's manifest, read once the caller is known."""
    for path, credentials in (("/api/runner/heartbeat", ()), ("/api/jobs", (bearer(farm),))):
        sock = connect(farm)
        sock.sendall(
            head(
                "POST", path, *credentials, "Content-Type: application/json", "Content-Length: 100"
            )
            + b"{"
        )
        answer, seconds = until_closed(sock)
        assert status_of(answer) == 408, path
        assert detail_of(answer) == f"the request body stopped arriving: nothing for {TIMEOUT:g} s"
        assert TIMEOUT * 0.75 <= seconds < LATE


def test_a_manifest_without_credentials_is_refused_unread_and_closed(farm: LocalFarm) -> None:
    """The report's case (no token, `Content-Length: 100`, one byte, then silence) is a
    401 at once: a job's manifest (up to 32 MiB) is not read for someone unknown, and the
    connection, whose unread rest the client could hold back for ever, is closed."""
    sock = connect(farm)
    sock.sendall(
        head("POST", "/api/jobs", "Content-Type: application/json", "Content-Length: 100") + b"{"
    )
    answer, seconds = until_closed(sock)
    assert status_of(answer) == 401
    assert b"connection: close" in answer.lower()
    assert seconds < TIMEOUT * 0.75, "closed with its answer, not by the body's timeout"


def test_a_stalled_upload_is_answered_408_and_leaves_no_temporary_file(
    farm: LocalFarm,
) -> None:
    # Past the blob store's first write (1 MiB), so a temporary file exists.
    sent = b"x" * (1024 * 1024 + 4096)
    sha = hashlib.sha256(sent + b"rest").hexdigest()
    sock = connect(farm)
    sock.sendall(
        head("PUT", f"/api/blobs/{sha}", bearer(farm), f"Content-Length: {len(sent) + 4}") + sent
    )
    answer, seconds = until_closed(sock)
    assert status_of(answer) == 408
    assert TIMEOUT * 0.75 <= seconds < LATE
    assert [path for path in (farm.data_dir / "blobs").rglob("*") if path.is_file()] == []


def test_a_stalled_resumable_upload_keeps_its_bytes_and_lets_go_of_the_upload(
    farm: LocalFarm,
) -> None:
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {farm.admin_token}"}
    with httpx.Client(base_url=farm.url, headers=auth, timeout=LATE) as client:
        created = client.post("/api/uploads", json={"sha256": sha, "size": len(data)})
        assert created.status_code == 201, created.text
        location = created.headers["Location"]
        patch = head(
            "PATCH",
            location,
            bearer(farm),
            "Upload-Offset: 0",
            "Content-Type: application/offset+octet-stream",
            f"Content-Length: {len(data)}",
        )
        sock = connect(farm)
        sock.sendall(patch + data[:100_000])
        answer, seconds = until_closed(sock)
        assert status_of(answer) == 408
        assert seconds < LATE
        # The upload is free again (a status request waits for a chunk still being
        # written), and kept what arrived: the client resumes from there.
        status = client.get(location)
        assert status.status_code == 200, status.text
        assert status.json()["offset"] == 100_000
        rest = client.patch(
            location,
            content=data[100_000:],
            headers={"Upload-Offset": "100000", "Content-Type": "application/offset+octet-stream"},
        )
        assert rest.status_code == 200, rest.text
        assert rest.json()["complete"] is True


def test_a_stalled_multipart_upload_is_answered_408(farm: LocalFarm) -> None:
    boundary = "farmhandboundary"
    part = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="scene.blend"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"BLENDER"
        + b"\x00" * 50_000
    )
    post = head(
        "POST",
        "/api/jobs",
        bearer(farm),
        f"Content-Type: multipart/form-data; boundary={boundary}",
        f"Content-Length: {len(part) + 100_000}",
    )
    sock = connect(farm)
    sock.sendall(post + part)
    answer, seconds = until_closed(sock)
    assert status_of(answer) == 408
    assert TIMEOUT * 0.75 <= seconds < LATE


def test_a_slow_upload_that_keeps_moving_outlasts_the_timeout(farm: LocalFarm) -> None:
    """Chunks come every 0.1 timeouts, for 2.5 timeouts in all: the timeout is idle, not
    total. Often, so that a loaded machine that holds this thread or the manager up for
    a second does not make a pause the length of the timeout."""
    chunks = [os.urandom(6_000) for _ in range(25)]
    data = b"".join(chunks)
    sha = hashlib.sha256(data).hexdigest()

    def slowly() -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk
            time.sleep(TIMEOUT * 0.1)

    started = time.monotonic()
    with httpx.Client(base_url=farm.url, timeout=LATE) as client:
        stored = client.put(
            f"/api/blobs/{sha}",
            content=slowly(),
            headers={"Authorization": f"Bearer {farm.admin_token}"},
        )
    assert stored.status_code == 201, stored.text
    assert time.monotonic() - started > TIMEOUT * 2


def test_a_slow_json_body_that_keeps_moving_outlasts_the_timeout(farm: LocalFarm) -> None:
    """The same for a JSON body, which the limits read whole before the route sees it."""
    body = json.dumps({"hashes": [hashlib.sha256(b"%d" % n).hexdigest() for n in range(6)]})
    pieces = [body[i : i + 16].encode() for i in range(0, len(body), 16)]

    def slowly() -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            time.sleep(TIMEOUT * 0.1)

    with httpx.Client(base_url=farm.url, timeout=LATE) as client:
        answer = client.post(
            "/api/blobs/missing",
            content=slowly(),
            headers={
                "Authorization": f"Bearer {farm.admin_token}",
                "Content-Type": "application/json",
            },
        )
    assert len(pieces) * TIMEOUT * 0.1 > TIMEOUT * 2
    assert answer.status_code == 200, answer.text


def test_a_live_stream_stays_open_past_the_timeout(farm: LocalFarm) -> None:
    """A request whose body is complete is not timed any more, however long its answer
    streams: the live view waits on its connection for as long as a browser shows it."""
    auth = {"Authorization": f"Bearer {farm.admin_token}"}
    with (
        httpx.Client(base_url=farm.url, timeout=LATE) as client,
        client.stream("GET", "/api/events", headers=auth) as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        time.sleep(TIMEOUT * 2.5)
        registered = httpx.post(
            farm.url + "/api/runner/register",
            json={"token": farm.runner_token, "name": "late-event"},
            timeout=LATE,
        )
        assert registered.status_code == 201, registered.text
        assert any(line == "event: runner" for line in lines)


def test_many_stalled_connections_are_closed_while_others_are_served(
    farm: LocalFarm,
) -> None:
    stalled = []
    for n in range(150):
        sock = connect(farm)
        if n % 3 == 1:
            sock.sendall(b"POST /api/jobs HTTP/1.1\r\nContent-Le")
        elif n % 3 == 2:
            sock.sendall(
                head(
                    "POST",
                    "/api/jobs",
                    bearer(farm),
                    "Content-Type: application/json",
                    "Content-Length: 9",
                )
                + b"[1"
            )
        stalled.append(sock)
    with httpx.Client(base_url=farm.url, timeout=LATE) as client:
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
    answers = [until_closed(sock)[0] for sock in stalled]
    assert [status_of(answer) for answer in answers[1::3]] == [408] * 50
    assert [status_of(answer) for answer in answers[2::3]] == [408] * 50
    assert answers[0::3] == [b""] * 50


@pytest.mark.skipif(sys.platform == "win32", reason="no open-files limit to lower")
def test_a_manager_out_of_file_descriptors_recovers_without_the_attackers_help(
    tmp_path: Path,
) -> None:
    """The report's second case: with 256 files allowed, 300 stalled connections left
    /healthz unanswerable for as long as the attacker kept them open. Now the manager
    closes them itself and answers again, while the attacker still holds its end."""
    with local_farm(tmp_path) as farm:
        limited = (
            "import os, resource, sys; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
            "os.execv(sys.executable, [sys.executable, '-m', 'farmhand', *sys.argv[1:]])"
        )
        args = [
            sys.executable, "-c", limited, "manager", "--host", farm.host,
            "--port", str(farm.port), "--data-dir", str(farm.data_dir),
            "--client-timeout", str(TIMEOUT),
        ]  # fmt: skip
        farm.manager = Child("manager", args, farm.log_dir / "manager.log", farm.env()).start()
        farm.children.append(farm.manager)
        farm.wait_healthy()
        attackers = []
        for _ in range(300):
            sock = socket.create_connection((farm.host, farm.port), timeout=LATE)
            with contextlib.suppress(OSError):  # a manager out of descriptors may drop it
                sock.sendall(b"GET / HTTP/1.1\r\nHo")
            attackers.append(sock)
        deadline = time.monotonic() + 4 * LATE
        healthy = False
        while not healthy and time.monotonic() < deadline:
            try:
                healthy = httpx.get(farm.url + "/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert healthy, "the manager stayed unreachable while stalled connections were open"
        for sock in attackers:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail("a stalled connection was still open")
            finally:
                sock.close()
        assert farm.manager.running


def test_several_server_processes_time_out_heads_and_bodies_too(tmp_path: Path) -> None:
    """`--processes 2` hands the timeout to the server processes it starts."""
    with local_farm(tmp_path) as farm:
        farm.start_manager("--processes", "2", "--client-timeout", str(TIMEOUT))
        for _ in range(4):  # a new connection lands on either process
            sock = connect(farm)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            answer, seconds = until_closed(sock)
            assert status_of(answer) == 408
            assert TIMEOUT * 0.75 <= seconds < LATE
        sock = connect(farm)
        sock.sendall(
            head(
                "POST",
                "/api/jobs",
                bearer(farm),
                "Content-Type: application/json",
                "Content-Length: 9",
            )
            + b"["
        )
        answer, _ = until_closed(sock)
        assert status_of(answer) == 408
