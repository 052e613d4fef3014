"""`POST /api/blend-info`, the web Submit page's upload, is held to the per-user storage
quota as every upload is, and a file it refuses costs its sender nothing (QA round 10:
an over-quota student got 200 for more .blend files, and three 20 MB junk "blends"
answered 422 stayed stored, taking their usage to 2153 % of the quota).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.manager.api import blendinfo
from farmhand.manager.api.limits import QuotaExceeded
from farmhand.manager.app import create_app
from farmhand.manager.storage import turns
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings
from tests.integration.test_limits import bearer, blend, make_user, put_blob
from tests.integration.test_storage import stored
from tests.integration.test_unused_uploads import usage_of

QUOTA = 800_000


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data", user_quota_bytes=QUOTA, gc_interval=0)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


@pytest.fixture
def reader(blender_executable: BlenderInstall, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manager reads with the real Blender executable (3.4 here)."""
    monkeypatch.setattr(blendinfo, "blenders", lambda: [blender_executable])


def read(farm: Farm, token: str, name: str, data: bytes) -> tuple[int, str, str | None]:
    answer = farm.client.post(
        "/api/blend-info",
        headers=bearer(token),
        files={"file": (name, data, "application/octet-stream")},
    )
    return answer.status_code, answer.text, answer.headers.get(blendinfo.BLOB_HEADER)


def test_under_the_quota_a_blend_is_read_and_counted(
    farm: Farm, reader: None, animated_blend_34: Path
) -> None:
    ann = make_user(farm, "ann")
    data = animated_blend_34.read_bytes()
    assert len(data) < QUOTA
    status, text, _ = read(farm, ann, "shot.blend", data)
    assert status == 200, text
    assert usage_of(farm, "ann") == len(data)
    # The same file chosen again costs nothing more, even with no room for another.
    _, created = put_blob(farm, ann, blend(QUOTA - len(data) - 10, b"f"))
    assert created == 201
    status, text, _ = read(farm, ann, "shot.blend", data)
    assert status == 200, text


def test_over_the_quota_blend_info_is_413_and_stores_nothing(
    farm: Farm, reader: None, animated_blend_34: Path
) -> None:
    ann = make_user(farm, "ann")
    put_blob(farm, ann, blend(QUOTA - 1000, b"a"))
    before = usage_of(farm, "ann")
    data = animated_blend_34.read_bytes()
    status, text, _ = read(farm, ann, "shot.blend", data)
    assert status == 413, text
    assert "storage quota exceeded" in text
    assert usage_of(farm, "ann") == before
    assert not stored(farm, hashlib.sha256(data).hexdigest())


def test_junk_refused_as_no_blend_is_not_kept(farm: Farm, reader: None) -> None:
    """A file with a .blend's first bytes that Blender cannot open: 422, and no blob,
    no usage, no hash for the form to submit."""
    ann = make_user(farm, "ann")
    junk = b"BLENDER-v304RENDH" + os.urandom(200_000)
    status, text, sha = read(farm, ann, "junk.blend", junk)
    assert status == 422, text
    assert sha is None
    assert usage_of(farm, "ann") == 0
    assert not stored(farm, hashlib.sha256(junk).hexdigest())


def test_a_file_another_user_holds_is_kept_for_them_when_refused(farm: Farm, reader: None) -> None:
    """Undoing a refused upload removes only what that request added."""
    ann, bob = make_user(farm, "ann"), make_user(farm, "bob")
    junk = b"BLENDER-v304RENDH" + os.urandom(1000)
    sha, created = put_blob(farm, bob, junk)
    assert created == 201
    status, text, _ = read(farm, ann, "junk.blend", junk)
    assert status == 422, text
    assert stored(farm, sha)
    assert usage_of(farm, "bob") == len(junk) and usage_of(farm, "ann") == 0


def test_a_refused_submit_does_not_advise_submitting() -> None:
    """The 413 of a job's submission advised "submit the job using them": the very
    request refused. An upload, which waits for its job, still says so."""
    held: dict[str, Any] = {
        "current": 9000,
        "usage": 9000,
        "quota": 6144,
        "unused": 4000,
        "grace_seconds": 60,
    }
    upload = str(QuotaExceeded(**held).detail)
    submitting = str(QuotaExceeded(**held, submitting=True).detail)
    assert "submit the job using them" in upload
    assert "submit the job" not in submitting
    assert "delete old jobs" in submitting and "ask an admin for a larger quota" in submitting


def test_a_file_over_the_whole_quota_is_not_told_that_freeing_room_helps() -> None:
    """A 255 MiB .blend for a 781 KiB quota, with 473 KiB held by uploads no job uses: it
    was told to "submit the job using them or wait for their removal to make room",
    which no removal does (QA round 13). A file that fits once room is freed still is."""
    whole = QuotaExceeded(current=484_000, usage=268_000_000, quota=800_000, unused=484_000)
    assert str(whole.detail).endswith(
        "what you send is more than your whole quota: ask an admin for a larger quota"
    )
    fits = QuotaExceeded(current=484_000, usage=900_000, quota=800_000, unused=484_000)
    assert str(fits.detail).endswith("wait for their removal to make room")


def test_one_users_uploads_take_turns_and_other_users_do_not_wait(
    farm: Farm, monkeypatch: pytest.MonkeyPatch, animated_blend_34: Path
) -> None:
    """QA round 11: the same .blend sent twice at once near the quota (a double click)
    shared the user's claim to it; the one refused undid the claim and the blob the
    other was reading: a 500, or a record with no file still counted. A user's uploads
    here now go one at a time; two users' still go side by side."""
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    both_in = threading.Barrier(2, timeout=5)

    async def watched(context: object, caller: object, file: object, name: str) -> object:
        who = name.split("-")[0]
        running[who] = running.get(who, 0) + 1
        most[who] = max(most.get(who, 0), running[who])
        most["all"] = max(most.get("all", 0), sum(running.values()))
        await asyncio.sleep(0.3)  # long enough for the other request to arrive
        running[who] -= 1
        raise HTTPException(418, "watched")

    monkeypatch.setattr(blendinfo, "_stored_and_read", watched)
    ann, bob = make_user(farm, "ann"), make_user(farm, "bob")
    data = animated_blend_34.read_bytes()

    def send(token: str, name: str) -> None:
        both_in.wait()
        assert read(farm, token, name, data)[0] == 418

    for pair in (
        [(ann, "ann-1.blend"), (ann, "ann-2.blend")],
        [(ann, "ann-3.blend"), (bob, "bob-1.blend")],
    ):
        senders = [threading.Thread(target=send, args=args) for args in pair]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
        both_in.reset()
    assert most["ann"] == 1, "ann's two uploads ran at once"
    assert most["all"] == 2, "ann's upload held bob's up"
    assert max(running.values()) == 0


# ------------------------------------------------ refused before the bytes are received

HANG = 20.0
"""Seconds to wait for an answer that must come before the body is sent: without it,
the manager waits for the rest of the body (the client timeout, 60 s), and this fails."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    """A real manager (raw sockets need a server), with the quota."""
    with local_farm(tmp_path_factory.mktemp("blendinfo")) as farm:
        farm.start_manager("--user-quota-bytes", str(QUOTA))
        yield farm


def served_user(farm: LocalFarm, name: str) -> str:
    answer = httpx.post(
        farm.url + "/api/admin/users",
        headers=bearer(farm.admin_token),
        json={"name": name},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def served_usage(farm: LocalFarm, name: str) -> int:
    usage = httpx.get(farm.url + "/api/admin/usage", headers=bearer(farm.admin_token), timeout=30)
    return int(next(u for u in usage.json()["users"] if u["name"] == name)["bytes"])


FILE_PART = (
    b"--b\r\n"
    b'Content-Disposition: form-data; name="file"; filename="big.blend"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
) + FAKE_BLEND


def answer_before_the_rest(sock: socket.socket) -> tuple[int, str, bytes]:
    """The status, detail and head of the answer that comes while the client still
    holds back the rest of its body; fails if none comes within `HANG` seconds."""
    sock.settimeout(HANG)
    received = b""
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"no answer before the rest of the body; got {received[:300]!r}")
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), str(json.loads(body)["detail"]), head


def test_an_upload_declared_over_the_quota_is_refused_before_its_body(served: LocalFarm) -> None:
    """A 200 MB .blend for a quota of 800 kB: the 413 comes after the headers and a few
    bytes, while 200 MB are still unsent (it used to come after all of them, received
    and spooled to disk), with the quota's usual detail, and the connection closes."""
    token = served_user(served, "dana")
    declared = 200_000_000
    head = [
        "POST /api/blend-info HTTP/1.1",
        "Host: farm",
        f"Authorization: Bearer {token}",
        "Content-Type: multipart/form-data; boundary=b",
        f"Content-Length: {declared}",
    ]
    sock = socket.create_connection((served.host, served.port), timeout=HANG)
    sock.sendall("\r\n".join([*head, "", ""]).encode() + FILE_PART)
    status, detail, answer_head = answer_before_the_rest(sock)
    assert status == 413, detail
    assert detail.startswith("storage quota exceeded: this would bring your usage to at least")
    assert b"connection: close" in answer_head.lower()
    assert served_usage(served, "dana") == 0


def test_a_chunked_upload_is_cut_off_where_it_passes_the_quota(served: LocalFarm) -> None:
    """No declared length (chunked): the manager reads until the file passes the quota,
    answers 413 then, while the client still has most of its file to send, and keeps
    nothing: no blob, no usage, no temporary file."""
    token = served_user(served, "eve")
    head = [
        "POST /api/blend-info HTTP/1.1",
        "Host: farm",
        f"Authorization: Bearer {token}",
        "Content-Type: multipart/form-data; boundary=b",
        "Transfer-Encoding: chunked",
    ]

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    sock = socket.create_connection((served.host, served.port), timeout=HANG)
    sock.sendall("\r\n".join([*head, "", ""]).encode() + chunk(FILE_PART))
    for _ in range(QUOTA // 65536 + 2):  # past the quota; 20 MB more would follow
        sock.sendall(chunk(os.urandom(65536)))
    status, detail, _ = answer_before_the_rest(sock)
    assert status == 413, detail
    # What was received is not the file's size: the figure says it is a lower bound.
    assert detail.startswith("storage quota exceeded: this would bring your usage to at least")
    assert served_usage(served, "eve") == 0
    assert not list((served.data_dir / "blobs" / "tmp").glob("upload-*"))


# ---------------------------------------------------- one turn across server processes


def user_id(farm: Farm, name: str) -> int:
    users = farm.client.get("/api/admin/users", headers=farm.admin).json()
    return int(next(user["id"] for user in users if user["name"] == name))


def test_a_users_turn_waits_for_another_process_holding_it(
    farm: Farm, monkeypatch: pytest.MonkeyPatch, animated_blend_34: Path
) -> None:
    """With `--processes N` two uploads of one user can reach two processes, which share
    the blob store and the database: the in-process lock alone let them run side by
    side. Another process holds ann's turn (its `flock`, as a second manager process
    does while it reads her upload): her request here waits until it lets go."""
    ann = make_user(farm, "ann")
    lock_file = farm.data_dir / blendinfo.TURNS_DIR / f"{user_id(farm, 'ann')}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            f"fd = os.open({str(lock_file)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        reached = threading.Event()  # the request waits for the flock, or runs
        entered = threading.Event()
        original: Callable[[Path, list[int]], None] = turns._take

        def waiting(path: Path, held: list[int]) -> None:
            reached.set()
            original(path, held)

        async def stored_and_read(*_: object) -> object:
            entered.set()
            reached.set()
            raise HTTPException(418, "ran")

        monkeypatch.setattr(turns, "_take", waiting)
        monkeypatch.setattr(blendinfo, "_stored_and_read", stored_and_read)
        answers: list[int] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                read(farm, ann, "a.blend", animated_blend_34.read_bytes())[0]
            )
        )
        sender.start()
        assert reached.wait(HANG), "the request neither waited for its turn nor ran"
        assert not entered.is_set(), "ran while another process held the user's turn"
        assert holder.stdin is not None
        holder.stdin.close()  # the other process lets go
        sender.join(HANG)
        assert answers == [418], "did not run once the other process let go"
    finally:
        holder.kill()
        holder.wait()
