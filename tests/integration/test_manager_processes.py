"""`farmhand manager --processes 2`: one manager, two server processes, one database.

What a user would notice if the processes did not act as one manager: a job that never
finishes or loses frames, a browser whose live view misses the changes the other process
made, a claim that waits for work another process queued.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm, descendants, local_farm
from tests.integration.conftest import submit_stand_in

pytestmark = pytest.mark.xdist_group("manager-processes")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with local_farm(tmp_path_factory.mktemp("processes"), heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager("--processes", "2")
        assert manager.process is not None
        deadline = time.monotonic() + 30
        # Both server processes must be up, not only the first to answer /healthz.
        while len(descendants(manager.process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield farm


def _fresh(farm: LocalFarm, token: str) -> httpx.Client:
    """A client on a connection of its own: the kernel hands it to either process."""
    return httpx.Client(
        base_url=farm.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def _submit(farm: LocalFarm, frames: int) -> int:
    with _fresh(farm, farm.admin_token) as client:
        return submit_stand_in(client, frame_start=1, frame_end=frames)


def _register(farm: LocalFarm, name: str) -> str:
    with httpx.Client(base_url=farm.url, timeout=30) as client:
        answer = client.post(
            "/api/runner/register", json={"token": farm.runner_token, "name": name}
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["secret"])


def test_both_processes_serve_and_a_job_completes_with_every_frame_once(
    farm: LocalFarm,
) -> None:
    job_id = _submit(farm, 24)
    png = _png()
    secrets = [_register(farm, f"sim{n}") for n in range(6)]
    errors: list[str] = []

    def work(secret: str) -> None:
        while True:
            # A new connection per call: the calls of one task land on both processes.
            with _fresh(farm, secret) as client:
                claim = client.get("/api/runner/tasks", params={"wait": 1})
            if claim.status_code == 204:
                return
            if claim.status_code != 200:
                errors.append(f"claim {claim.status_code}: {claim.text}")
                return
            task = claim.json()
            with _fresh(farm, secret) as client:
                reply = client.post(
                    f"/api/runner/tasks/{task['task_id']}/progress",
                    json={"frames_done": 0, "log_lines": ["working"]},
                )
            if reply.status_code != 200 or not reply.json()["keep_going"]:
                errors.append(f"progress {reply.status_code}: {reply.text}")
            for frame in task["frames"]:
                with _fresh(farm, secret) as client:
                    upload = client.post(
                        f"/api/runner/files/{job_id}/upload",
                        data={"task_id": str(task["task_id"]), "frame": str(frame)},
                        files={"file": (f"{frame}.png", png, "image/png")},
                    )
                if upload.status_code != 201:
                    errors.append(f"upload {upload.status_code}: {upload.text}")
            with _fresh(farm, secret) as client:
                done = client.post(
                    f"/api/runner/tasks/{task['task_id']}/complete",
                    json={"frames": task["frames"]},
                )
            if done.status_code != 200:
                errors.append(f"complete {done.status_code}: {done.text}")

    threads = [threading.Thread(target=work, args=(secret,)) for secret in secrets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with _fresh(farm, farm.admin_token) as client:
        job = client.get(f"/api/jobs/{job_id}").json()
        files = client.get(f"/api/jobs/{job_id}/files").json()
    assert job["status"] == "completed"
    frames = sorted(f["frame"] for f in files if f["kind"] == "output")
    assert frames == list(range(1, 25))


def test_a_runner_deleted_through_one_process_is_told_so_by_both(farm: LocalFarm) -> None:
    """The process that did not delete it still remembers its secret (`RunnerIdCache`)
    and finds its row gone: it must say `deleted` too, or the worker registers again."""
    secret = _register(farm, "doomed")
    # Each client keeps its connection, so its process, which learns the secret at the
    # first call; with a dozen, both processes do (but for a 1 in 2048 chance).
    clients = [
        httpx.Client(base_url=farm.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        for _ in range(12)
    ]
    try:
        for client in clients:
            assert client.post("/api/runner/heartbeat", json={}).status_code == 200
        with _fresh(farm, farm.admin_token) as admin:
            listed = admin.get("/api/admin/runners").json()
            worker_id = next(row["id"] for row in listed if row["name"] == "doomed")
            assert admin.delete(f"/api/admin/runners/{worker_id}").status_code == 204
        for client in clients:
            answer = client.post("/api/runner/heartbeat", json={})
            assert answer.status_code == 401, answer.text
            assert answer.headers.get("X-Farmhand-Runner") == "deleted", answer.text
            assert "may not register again by itself" in answer.json()["detail"]
    finally:
        for client in clients:
            client.close()


def _events(farm: LocalFarm, got: queue.Queue[dict[str, object]], ready: threading.Event) -> None:
    """Read the live stream on one connection (so one process) into `got`."""
    with (
        httpx.Client(base_url=farm.url, timeout=None) as client,
        client.stream(
            "GET", "/api/events", headers={"Authorization": f"Bearer {farm.admin_token}"}
        ) as stream,
    ):
        ready.set()
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind is not None:
                got.put({"kind": kind, **json.loads(line.split(":", 1)[1])})


def test_a_live_stream_gets_the_changes_made_through_either_process(farm: LocalFarm) -> None:
    got: queue.Queue[dict[str, object]] = queue.Queue()
    ready = threading.Event()
    threading.Thread(target=_events, args=(farm, got, ready), daemon=True).start()
    assert ready.wait(10)
    time.sleep(0.5)  # the stream's subscription is made after its headers are sent
    # Twenty jobs, each submitted on a connection of its own: the kernel spreads them over
    # both processes, and the one stream must hear of every one.
    submitted = {_submit(farm, 1) for _ in range(20)}
    heard: set[int] = set()
    deadline = time.monotonic() + 20
    while not submitted <= heard and time.monotonic() < deadline:
        try:
            event = got.get(timeout=0.5)
        except queue.Empty:
            continue
        if event["kind"] == "job":
            heard.add(int(str(event["id"])))
    assert submitted - heard == set(), "the stream missed jobs submitted through the other process"


def test_the_supervisor_is_bare_uvicorn_and_stopping_it_stops_every_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The process `farmhand manager --processes 2` started becomes uvicorn's supervisor
    (the same pid, so a service manager's SIGTERM reaches it) without the web app, the
    database layer and the migrations it loaded to prepare the database."""
    with local_farm(tmp_path_factory.mktemp("supervisor"), heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager("--processes", "2")
        assert manager.process is not None
        pid = manager.process.pid
        deadline = time.monotonic() + 30
        while len(descendants(pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"uvicorn" in command and command[command.index(b"--workers") + 1] == b"2"
        mapped = Path(f"/proc/{pid}/maps").read_text()
        assert "pydantic_core" not in mapped and "sqlalchemy" not in mapped
        servers = [p for p in descendants(pid) if p != pid]
        assert any("sqlalchemy" in Path(f"/proc/{p}/maps").read_text() for p in servers)

        manager.process.terminate()
        manager.process.wait(timeout=20)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in servers if Path(f"/proc/{p}").exists()], "servers outlived it"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it serves nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _servers(supervisor: int) -> list[int]:
    """The server processes under `supervisor` (not multiprocessing's resource tracker)."""
    found = []
    for pid in descendants(supervisor)[1:]:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:  # it ended while we looked
            pass
    return found


def test_servers_die_with_a_killed_supervisor_and_the_same_command_starts_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A supervisor killed with SIGKILL left its server processes serving the port, and
    the same command run again printed "listening" and died: address already in use."""
    with local_farm(tmp_path_factory.mktemp("killed"), heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager("--processes", "2")
        assert manager.process is not None
        supervisor = manager.process.pid
        deadline = time.monotonic() + 30
        while len(_servers(supervisor)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_servers(supervisor)) == 2
        under = [p for p in descendants(supervisor) if p != supervisor]  # and its helpers

        manager.kill()
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in under) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in under if _alive(p)], "processes outlived their supervisor"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{farm.url}/healthz", timeout=5)

        again = farm.start_manager("--processes", "2")
        assert again.running, again.tail()
        assert httpx.get(f"{farm.url}/healthz", timeout=5).status_code == 200
        assert "already in use" not in again.tail()
