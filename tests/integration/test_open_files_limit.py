"""A manager out of file descriptors says so, answers what it can, and recovers.

QA ran a manager under `prlimit --nofile=64` and opened 100 live event streams: most
clients got no answer, open streams were cut with `unable to open database file` and
"response already started" tracebacks, and nothing in the log said "too many open
files". Here a real `farmhand manager` process gets the same low limit (soft and hard,
so it cannot raise it), and the in-process tests take the test process's own soft limit
down to the descriptors it has open, for a request that must open the database.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from farmhand.localfarm import free_port
from farmhand.manager.api import errors
from farmhand.manager.app import create_app
from farmhand.manager.context import ManagerContext
from tests.integration.conftest import Farm, make_settings

LIMIT = 64
STREAMS = 100
HOLD_SECONDS = 8.0
"""How long each client holds its stream: several of the streams' checks of their caller
(every 2 s), each of which needs a database connection."""


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


@pytest.fixture
def starved_manager(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A manager whose hard limit of open files is `LIMIT`: its URL, admin token, log."""
    port = free_port("127.0.0.1")
    data_dir = tmp_path / "data"
    log_path = tmp_path / "manager.log"
    token = "fh_api_" + "t" * 40
    env = {**os.environ, "FARMHAND_ADMIN_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    env.pop("FARMHAND_DATABASE_URL", None)
    command = [sys.executable, "-m", "farmhand", "manager", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_low_limit,  # in the child, before it runs the manager
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the manager did not start\n" + log_path.read_text()
            time.sleep(0.2)
        yield url, token, log_path
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _hold_stream(port: int, token: str) -> str:
    """Open `GET /api/events` and hold it `HOLD_SECONDS`; its status line ('' for none:
    a connection the manager could not take, reset at once)."""
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HOLD_SECONDS) as sock:
            sock.sendall(
                f"GET /api/events HTTP/1.1\r\nHost: farm\r\nAuthorization: Bearer {token}"
                "\r\n\r\n".encode()
            )
            end = time.monotonic() + HOLD_SECONDS
            while time.monotonic() < end:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
    except OSError:  # reset, or the hold's end
        pass
    head = received.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    return head


def test_a_manager_out_of_descriptors_says_so_in_one_line_and_serves_again(
    starved_manager: tuple[str, str, Path],
) -> None:
    url, token, log_path = starved_manager
    port = int(url.rsplit(":", 1)[1])
    with ThreadPoolExecutor(STREAMS) as pool:
        heads = list(pool.map(lambda _: _hold_stream(port, token), range(STREAMS)))

    statuses = [head.split("\r\n", 1)[0] for head in heads if head]
    assert statuses, "no stream was answered at all"
    for head in heads:
        if not head:
            continue
        status = head.split(" ")[1]
        assert status in ("200", "503"), head  # never a 500
        if status == "503":
            assert "retry-after" in head.lower(), head
    # Once the clients have gone, it serves as before: no restart.
    answer = httpx.get(url + "/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text

    log = log_path.read_text(errors="replace")
    assert f"open files limit is low for a farm ({LIMIT}" in log  # said at start
    assert "out of file descriptors: raise the limit (ulimit -n" in log
    assert "Traceback" not in log, log
    assert "response already started" not in log


@pytest.fixture
def farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Farm]:
    monkeypatch.setattr(errors, "STORAGE_LOG", errors.StorageLog())
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def test_a_request_that_cannot_open_the_database_for_want_of_descriptors_is_a_503(
    farm: Farm,
) -> None:
    context: ManagerContext = farm.client.app.state.farm  # type: ignore[attr-defined]
    assert farm.client.get("/api/jobs", headers=farm.admin).status_code == 200
    context.db.engine.dispose()  # the next request opens a new database connection
    context.db.read_engine.dispose()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor
    os.close(probe)
    with capture_logs() as logs:
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # none free now
        try:
            refused = farm.client.get("/api/jobs", headers=farm.admin)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"].isdigit()
    assert "out of file descriptors" in refused.json()["detail"]
    said = [entry for entry in logs if "out of file descriptors" in str(entry["event"])]
    assert len(said) == 1, logs
    assert not [entry for entry in logs if entry["event"] == "unhandled error"]

    assert farm.client.get("/api/jobs", headers=farm.admin).status_code == 200
