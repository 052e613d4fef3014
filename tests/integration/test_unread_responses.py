"""A client that stops reading a download is cut off; one that reads slowly is not.

A real manager (`--client-timeout 2`) serving a job's 24 MiB input, and raw sockets
with a small receive buffer, so that the manager's buffers fill soon after a reader
stops. A reader that stops must be disconnected after about the timeout, with one INFO
line naming what it was downloading, and what served it (the open blob file, the zip
being written) must be let go. A reader taking 50 KB a second must get every byte,
however many timeouts that takes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from farmhand.localfarm import LocalFarm, local_farm
from tests.integration.conftest import FAKE_BLEND

TIMEOUT = 2.0
"""The manager's `--client-timeout` in these tests."""
LATE = TIMEOUT + 30
"""Generous: a download still not cut off this long after its reader stopped never is."""
CUT_OFF = "response cut off: the client stopped reading it"
BIG = 24 * 1024**2
"""Far more than the kernel's buffers on both ends hold (a few MiB)."""


@dataclass
class Served:
    farm: LocalFarm
    auth: str
    job_id: int
    file_id: int
    big_sha: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with local_farm(tmp_path_factory.mktemp("unread")) as farm:
        farm.start_manager("--client-timeout", str(TIMEOUT))
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        big = os.urandom(BIG)  # random: the zip cannot make it smaller
        shas = {"a.blend": FAKE_BLEND, "big.bin": big}
        with httpx.Client(base_url=farm.url, headers=admin, timeout=60) as api:
            files = {}
            for name, data in shas.items():
                files[name] = hashlib.sha256(data).hexdigest()
                assert api.put(f"/api/blobs/{files[name]}", content=data).is_success
            created = api.post(
                "/api/jobs",
                json={"frame_start": 1, "frame_end": 1, "main_file": "a.blend", "files": files},
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            listed = api.get(f"/api/jobs/{job_id}/files").json()
            (file_id,) = [entry["id"] for entry in listed if entry["path"] == "big.bin"]
        yield Served(farm, admin["Authorization"], job_id, file_id, files["big.bin"])


def manager_log(farm: LocalFarm) -> str:
    assert farm.manager is not None
    return farm.manager.log_path.read_text(encoding="utf-8", errors="replace")


def start_download(served: Served, path: str) -> tuple[socket.socket, bytes]:
    """A connection asking for `path` with a small receive buffer, and the answer's head."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connecting
    sock.settimeout(LATE)
    sock.connect((served.farm.host, served.farm.port))
    head = (
        f"GET {path} HTTP/1.1\r\nHost: farm\r\nAuthorization: {served.auth}\r\n"
        "Connection: close\r\n\r\n"  # the end of the answer is the end of the connection
    )
    sock.sendall(head.encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    answer, _, body = received.partition(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return sock, body


def rest_of(sock: socket.socket) -> bytes:
    """What is left to read until the manager closes the connection."""
    received = b""
    with sock:
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def cut_off_lines(served: Served, path: str, since: int) -> list[str]:
    logged = manager_log(served.farm)[since:]
    return [line for line in logged.splitlines() if CUT_OFF in line and f"path={path}" in line]


def open_blob_files(served: Served, sha: str) -> list[str]:
    """The manager's open files that are the blob `sha` (Linux's /proc)."""
    assert served.farm.manager is not None and served.farm.manager.process is not None
    fds = Path(f"/proc/{served.farm.manager.process.pid}/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.endswith(sha[2:]):  # blobs/sha256/ab/cdef…
            found.append(target)
    return found


def wait_for(what: str, condition: Callable[[], object], seconds: float = LATE) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {seconds:g} s"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("download", ["files/{file}/download", "inputs.zip"])
def test_a_download_its_reader_stopped_reading_is_cut_off_and_let_go(
    served: Served, download: str
) -> None:
    path = f"/api/jobs/{served.job_id}/" + download.format(file=served.file_id)
    since = len(manager_log(served.farm))
    sock, first = start_download(served, path)
    # Serving it holds the blob open (a file download reads it, the zip copies it in).
    wait_for("the blob opened", lambda: open_blob_files(served, served.big_sha))
    # The reader stops: nothing more is read until the manager has given up on it.
    wait_for("the cut-off logged", lambda: cut_off_lines(served, path, since))
    received = first + rest_of(sock)
    assert len(received) < BIG, "the whole download arrived: it was not cut off"
    (line,) = cut_off_lines(served, path, since)
    assert "[info" in line and "method=GET" in line
    wait_for("the blob let go", lambda: not open_blob_files(served, served.big_sha))
    with httpx.Client(base_url=served.farm.url, timeout=LATE) as client:
        assert client.get("/healthz").status_code == 200


def test_a_slow_reader_gets_the_whole_download(served: Served) -> None:
    """About 50 KB a second for 4 timeouts, then as fast as it comes: every byte arrives,
    and nothing is logged as cut off. The manager's buffers stay full the whole time; the
    reader is slow, not stalled."""
    path = f"/api/jobs/{served.job_id}/files/{served.file_id}/download"
    since = len(manager_log(served.farm))
    sock, received = start_download(served, path)
    slow_until = time.monotonic() + 4 * TIMEOUT
    while time.monotonic() < slow_until:
        received += sock.recv(5000)
        time.sleep(0.1)
    received += rest_of(sock)
    assert len(received) == BIG
    assert hashlib.sha256(received).hexdigest() == served.big_sha
    assert cut_off_lines(served, path, since) == []
