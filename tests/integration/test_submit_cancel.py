"""A canceled `farmhand submit` frees what it had uploaded; a crashed one still resumes.

QA round 14 (add-on, `--user-quota-bytes 500000000`): Cancel 3 s into the upload of a
200 MB scene said "submit canceled", but the manager kept the unfinished upload,
reserving 200 MiB of the artist's quota until `blob_retention_days` passed, and the
next submit (the texture changed) was refused: "storage quota exceeded: … 200.0 MiB of
it by 1 unfinished upload". The add-on cancels with SIGTERM, which ended the CLI at
once. Now SIGTERM and Ctrl-C abort the uploads the submit began and release the files
it stored, and the next submit has the room; a killed submit (SIGKILL: a crash) leaves
its upload, which the next run resumes.

The manager is reached through a proxy that passes the client's bytes at `RATE`, so
the submit is reliably mid-upload for seconds when it is stopped: the test waits until
the manager has received `UNDER_WAY` bytes of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from farmhand.addon import runner
from farmhand.localfarm import LocalFarm
from farmhand.scenes import make_project
from tests.integration.conftest import farm_fixture

MIB = 1024 * 1024
QUOTA = 64 * MIB
BIG = 40 * MIB
"""The texture: two of it do not fit the quota, so a first one still held refuses the next."""
RATE = 4 * MIB
"""Bytes a second the proxy passes from the client: the texture takes 10 s."""
UNDER_WAY = 4 * MIB
FARMHAND = str(Path(sys.executable).with_name("farmhand"))

farm = farm_fixture("--user-quota-bytes", str(QUOTA), name="quota")


class SlowProxy:
    """A TCP proxy to the manager passing the client's bytes at `RATE` (the answers at
    full speed). Either side closing closes the other, as a network does: a client that
    cuts its connection is seen by the manager at once."""

    def __init__(self, target: str) -> None:
        where = urlsplit(target)
        self.target = (where.hostname or "127.0.0.1", where.port or 80)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, RATE), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        try:
            while data := source.recv(64 * 1024):
                sink.sendall(data)
                if rate is not None:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for side in (source, sink):
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()
        for side in self.sockets:
            side.close()


@pytest.fixture
def proxy(farm: LocalFarm) -> Iterator[SlowProxy]:
    slow = SlowProxy(farm.url)
    yield slow
    slow.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose texture (`texture_of`) each test fills with new bytes."""
    return make_project(tmp_path_factory.mktemp("project"))


def texture_of(scene: Path) -> Path:
    return scene.parents[1] / "textures" / "checker.png"


def new_texture(scene: Path) -> None:
    """New bytes, so the farm holds none of them (packed as they are: nobody renders it)."""
    texture_of(scene).write_bytes(os.urandom(BIG))


def artist(farm: LocalFarm, name: str) -> str:
    """A new user's token: a person with a quota (admins have none)."""
    with httpx.Client(base_url=farm.url, timeout=30) as api:
        answer = api.post(
            "/api/admin/users",
            headers={"Authorization": f"Bearer {farm.admin_token}"},
            json={"name": name},
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def unfinished(farm: LocalFarm, token: str) -> list[dict[str, Any]]:
    """`GET /api/uploads` as the artist."""
    with httpx.Client(base_url=farm.url, timeout=30) as api:
        answer = api.get("/api/uploads", headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    uploads: list[dict[str, Any]] = answer.json()
    return uploads


def arrived(farm: LocalFarm, token: str) -> int:
    return max((upload["offset"] for upload in unfinished(farm, token)), default=0)


def counted(farm: LocalFarm, name: str) -> int:
    """What the artist's quota counts: their files and what their uploads announced."""
    with httpx.Client(base_url=farm.url, timeout=30) as api:
        answer = api.get(
            "/api/admin/usage", headers={"Authorization": f"Bearer {farm.admin_token}"}
        )
    entry = next(user for user in answer.json()["users"] if user["name"] == name)
    return int(entry["bytes"]) + int(entry["open_upload_reserved_bytes"])


def environment(url: str, token: str) -> dict[str, str]:
    return dict(os.environ, FARMHAND_URL=url, FARMHAND_TOKEN=token, COLUMNS="200")


def start_submit(scene: Path, url: str, token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FARMHAND, "submit", str(scene), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(url, token),
    )


def wait_until_under_way(farm: LocalFarm, token: str, process: subprocess.Popen[str]) -> None:
    """Until the manager has `UNDER_WAY` bytes of the texture (bounded: a hang fails)."""
    deadline = time.monotonic() + 120
    while arrived(farm, token) < UNDER_WAY:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the upload never got under way"
        time.sleep(0.05)


def submit_directly(farm: LocalFarm, scene: Path, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FARMHAND, "submit", str(scene)],
        capture_output=True,
        text=True,
        env=environment(farm.url, token),
        timeout=300,
        check=False,
    )


def assert_freed_and_the_next_submit_fits(
    farm: LocalFarm, scene: Path, token: str, name: str
) -> None:
    assert unfinished(farm, token) == [], "the canceled submit's upload is aborted"
    assert counted(farm, name) == 0, "nothing it sent counts against the quota"
    new_texture(scene)  # other files, needing the room the canceled one held
    again = submit_directly(farm, scene, token)
    assert again.returncode == 0, again.stderr


@pytest.mark.blender
def test_the_addons_cancel_frees_the_upload_and_the_next_submit_fits(
    farm: LocalFarm, scene: Path, proxy: SlowProxy
) -> None:
    """The add-on's own runner (`runner.Submit`, whose `cancel()` sends SIGTERM)."""
    token = artist(farm, "ann")
    new_texture(scene)
    submit = runner.Submit(
        runner.submit_args(FARMHAND, str(scene), 1, 1), environment(proxy.url, token)
    )
    guard = threading.Timer(120, submit.process.kill)  # a hang fails, it does not block
    guard.start()
    events = []
    try:
        for event in submit.events():
            events.append(event)
            under_way = event["event"] == "upload" and not submit.canceled
            if under_way and arrived(farm, token) >= UNDER_WAY:
                submit.cancel()
    finally:
        guard.cancel()
    assert submit.canceled, events
    assert events[-1] == {"event": "canceled"}, events[-3:]
    assert not [event for event in events if event["event"] == "error"], events
    assert submit.process.returncode == 128 + signal.SIGTERM
    assert_freed_and_the_next_submit_fits(farm, scene, token, "ann")


@pytest.mark.blender
def test_ctrl_c_frees_the_upload_and_says_so(
    farm: LocalFarm, scene: Path, proxy: SlowProxy
) -> None:
    token = artist(farm, "bea")
    new_texture(scene)
    process = start_submit(scene, proxy.url, token)
    try:
        wait_until_under_way(farm, token, process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, (stdout, stderr)
    assert (
        "stopped: the job was not submitted, and what it had uploaded was discarded, so none "
        "of it counts against your storage quota. Run the same command again to submit it"
    ) in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert_freed_and_the_next_submit_fits(farm, scene, token, "bea")


@pytest.mark.blender
def test_a_killed_submit_keeps_its_upload_and_the_next_run_resumes_it(
    farm: LocalFarm, scene: Path, proxy: SlowProxy
) -> None:
    """A crash is no decision: what arrived stays, and is not sent again."""
    token = artist(farm, "cyd")
    new_texture(scene)
    process = start_submit(scene, proxy.url, token)
    try:
        wait_until_under_way(farm, token, process)
        process.kill()
        process.communicate(timeout=60)
    finally:
        process.kill()
    kept = unfinished(farm, token)
    assert len(kept) == 1 and kept[0]["size"] == BIG, kept
    offset = kept[0]["offset"]
    assert offset >= UNDER_WAY

    again = submit_directly(farm, scene, token)

    assert again.returncode == 0, again.stderr
    line = next(line for line in again.stdout.splitlines() if "bytes sent" in line)
    sent = int(line.split(";")[-1].split()[0])
    others = sum(path.stat().st_size for path in scene.parents[1].rglob("*.blend"))
    assert sent <= BIG - offset + others * 1.1, "what had arrived is not sent again"
    assert unfinished(farm, token) == []


def test_the_quota_refusal_names_the_cli_and_it_lists_and_aborts_the_uploads(
    farm: LocalFarm,
) -> None:
    """What the add-on shows an artist refused for an unfinished upload names commands
    they can run, not only REST calls; those commands do it."""
    token = artist(farm, "dee")
    who = {"Authorization": f"Bearer {token}"}
    data = os.urandom(MIB)
    with httpx.Client(base_url=farm.url, timeout=30) as api:
        body = {"sha256": hashlib.sha256(data).hexdigest(), "size": BIG}  # never finished
        started = api.post("/api/uploads", headers=who, json=body)
        assert started.status_code == 201, started.text
        refused = api.post(
            "/api/uploads", headers=who, json={"sha256": "0" * 64, "size": QUOTA - BIG + 1}
        )
    assert refused.status_code == 413, refused.text
    assert (
        "farmhand uploads list shows yours, farmhand uploads abort --all aborts them"
        in refused.json()["detail"]
    )
    env = environment(farm.url, token)
    listed = subprocess.run(
        [FARMHAND, "uploads", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert started.json()["id"] in listed.stdout and "40.0 MiB" in listed.stdout, listed.stdout
    aborted = subprocess.run(
        [FARMHAND, "uploads", "abort", "--all"], capture_output=True, text=True, env=env, timeout=60
    )
    assert aborted.returncode == 0, aborted.stderr
    assert "aborted 1 upload" in aborted.stdout
    assert unfinished(farm, token) == []
