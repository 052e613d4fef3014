"""Unfinished resumable uploads and the limits of the person who opened them.

Security QA (round 2, finding 1): with a 1 MB quota, alice opened 20 uploads of 900 KB
and sent all but the last byte of each: 18 MB sat in `blobs/tmp/partial` for 7 days,
counted by no quota, limited by nothing and missing from the admins' usage figures. Now
an unfinished upload counts towards its owner's quota by the size it announced, a user
may have `max_open_uploads` of them, the admins see the bytes they hold, and a client
that crashed still resumes its own uploads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.client import FarmhandClient, FarmhandError
from farmhand.client.transfer import Uploader, hash_files
from farmhand.localfarm import LocalFarm
from farmhand.manager.app import create_app
from farmhand.manager.settings import ManagerSettings
from tests.integration.conftest import Farm, make_settings

QUOTA = 100_000
SIZE = 45_000
"""Two unfinished uploads of this size fit the quota, a third does not."""
ABORT_HINT = (
    "farmhand uploads list shows yours, farmhand uploads abort --all aborts them; "
    "GET /api/uploads, DELETE /api/uploads/{id}"
)
"""The CLI's way first: the add-on shows the refusal to an artist, who has no REST client."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def open_farm(settings: ManagerSettings) -> Iterator[Farm]:
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


@pytest.fixture
def settings(tmp_path: Path) -> ManagerSettings:
    """A 100 kB quota and at most 3 unfinished uploads per user."""
    return make_settings(tmp_path / "data", user_quota_bytes=QUOTA, max_open_uploads=3)


@pytest.fixture
def farm(settings: ManagerSettings) -> Iterator[Farm]:
    with open_farm(settings) as farm:
        yield farm


def make_user(farm: Farm, name: str) -> str:
    answer = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def start(farm: Farm, token: str, data: bytes) -> httpx.Response:
    body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    answer: httpx.Response = farm.client.post("/api/uploads", headers=bearer(token), json=body)
    return answer


def send(farm: Farm, token: str, upload_id: str, offset: int, data: bytes) -> int:
    answer = farm.client.patch(
        f"/api/uploads/{upload_id}",
        headers={
            **bearer(token),
            "Upload-Offset": str(offset),
            "Content-Type": "application/octet-stream",
        },
        content=data,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["offset"])


def all_but_the_last_byte(farm: Farm, token: str, data: bytes) -> str:
    created = start(farm, token, data)
    assert created.status_code == 201, created.text
    upload_id = str(created.json()["id"])
    assert send(farm, token, upload_id, 0, data[:-1]) == len(data) - 1
    return upload_id


def open_ids(farm: Farm, token: str) -> list[str]:
    answer = farm.client.get("/api/uploads", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return [upload["id"] for upload in answer.json()]


def partial_bytes(farm: Farm) -> int:
    partial = farm.data_dir / "blobs" / "tmp" / "partial"
    return sum(part.stat().st_size for part in partial.glob("*.part"))


def usage_of(farm: Farm, name: str) -> dict[str, Any]:
    answer = farm.client.get("/api/admin/usage", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    (user,) = [user for user in answer.json()["users"] if user["name"] == name]
    return dict(user)


def test_unfinished_uploads_count_towards_the_quota(farm: Farm) -> None:
    """The QA's steps: twenty uploads held one byte short of done. Two fit the quota;
    the rest are refused with the quota's 413, which names what is open and how to
    abort it."""
    alice = make_user(farm, "alice")
    accepted, refused = [], []
    for _ in range(20):
        data = os.urandom(SIZE)
        answer = start(farm, alice, data)
        if answer.status_code == 413:
            refused.append(answer.json()["detail"])
            continue
        assert answer.status_code == 201, answer.text
        assert send(farm, alice, answer.json()["id"], 0, data[:-1]) == SIZE - 1
        accepted.append(answer.json()["id"])
    assert len(accepted) == 2 and len(refused) == 18
    assert "storage quota exceeded" in refused[0]
    assert "87.9 KiB of it by 2 unfinished uploads" in refused[0], refused[0]
    assert ABORT_HINT in refused[0]
    assert partial_bytes(farm) == 2 * (SIZE - 1) <= QUOTA, "the disk holds no more than that"

    # A whole upload counts them too: 20 kB more would pass the quota.
    small = os.urandom(20_000)
    put = farm.client.put(
        f"/api/blobs/{hashlib.sha256(small).hexdigest()}", headers=bearer(alice), content=small
    )
    assert put.status_code == 413, put.text
    assert "2 unfinished uploads" in put.json()["detail"]

    # Aborting one makes room again.
    assert sorted(open_ids(farm, alice)) == sorted(accepted)
    aborted = farm.client.delete(f"/api/uploads/{accepted[0]}", headers=bearer(alice))
    assert aborted.status_code == 204, aborted.text
    assert start(farm, alice, os.urandom(SIZE)).status_code == 201


def test_resuming_an_upload_is_not_refused_by_the_room_it_already_holds(farm: Farm) -> None:
    """Two uploads fill alice's quota: each can still be found again and finished."""
    alice = make_user(farm, "alice")
    files = [os.urandom(SIZE), os.urandom(SIZE)]
    uploads = {all_but_the_last_byte(farm, alice, data): data for data in files}
    assert start(farm, alice, os.urandom(SIZE)).status_code == 413, "full"
    for upload_id, data in uploads.items():
        again = start(farm, alice, data)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == upload_id and again.json()["offset"] == SIZE - 1
        assert send(farm, alice, upload_id, SIZE - 1, data[-1:]) == SIZE
    assert open_ids(farm, alice) == []


def test_an_upload_found_again_before_its_first_byte_is_200_not_a_new_one(farm: Farm) -> None:
    """Docs QA (round 7): asked again before any byte of it arrived, an upload answered
    201 again, as if it were new; a client counting 201s as new uploads was misled."""
    alice = make_user(farm, "alice")
    data = os.urandom(SIZE)
    created = start(farm, alice, data)
    assert created.status_code == 201, created.text
    again = start(farm, alice, data)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == created.json()["id"] and again.json()["offset"] == 0
    assert again.headers["Location"] == created.headers["Location"]
    assert open_ids(farm, alice) == [created.json()["id"]], "still one upload"


def test_a_user_may_have_max_open_uploads_unfinished(farm: Farm) -> None:
    alice = make_user(farm, "alice")
    bob = make_user(farm, "bob")
    files = [os.urandom(10) for _ in range(4)]
    ids = [start(farm, alice, data).json()["id"] for data in files[:3]]
    fourth = start(farm, alice, files[3])
    assert fourth.status_code == 409, fourth.text
    detail = fourth.json()["detail"]
    assert "you have 3 unfinished uploads" in detail
    assert "max_open_uploads = 3" in detail and ABORT_HINT in detail
    assert "removed on its own" in detail

    listed = farm.client.get("/api/uploads", headers=bearer(alice)).json()
    assert sorted(u["id"] for u in listed) == sorted(ids)
    assert {u["sha256"] for u in listed} == {hashlib.sha256(d).hexdigest() for d in files[:3]}
    # One of the three, asked for again (a client that restarted): found, not refused.
    again = start(farm, alice, files[0])
    assert again.status_code == 200 and again.json()["id"] == ids[0], again.text
    # Others have their own limit; admins have none, as they have no quota.
    assert start(farm, bob, files[3]).status_code == 201
    for data in files:
        assert start(farm, farm.admin_token, data).status_code == 201
    assert open_ids(farm, bob) != [] and len(open_ids(farm, farm.admin_token)) == 4

    assert farm.client.delete(f"/api/uploads/{ids[1]}", headers=bearer(alice)).status_code == 204
    assert start(farm, alice, files[3]).status_code == 201


def test_uploads_opened_at_once_do_not_pass_the_limit_together(farm: Farm) -> None:
    """Twelve requests at the same moment: each counts the others' uploads, so exactly
    three (the limit) are opened and every other one is told why not."""
    alice = make_user(farm, "alice")
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: start(farm, alice, os.urandom(10)), range(12)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201] * 3 + [409] * 9, [answer.text for answer in answers]
    assert len(open_ids(farm, alice)) == 3


def test_admins_see_the_bytes_held_by_unfinished_uploads(farm: Farm) -> None:
    alice = make_user(farm, "alice")
    make_user(farm, "bob")
    data = os.urandom(SIZE)
    upload_id = start(farm, alice, data).json()["id"]
    send(farm, alice, upload_id, 0, data[:30_000])

    usage = farm.client.get("/api/admin/usage", headers=farm.admin).json()
    assert usage["open_uploads"] == 1 and usage["open_upload_bytes"] == 30_000
    assert usage["total_bytes"] == 0, "no blob yet"
    assert usage_of(farm, "alice") | {"user_id": 0} == {
        "user_id": 0,
        "name": "alice",
        "role": "user",
        "jobs": 0,
        "bytes": 0,
        "open_uploads": 1,
        "open_upload_bytes": 30_000,
        "open_upload_reserved_bytes": SIZE,
    }
    assert usage_of(farm, "bob")["open_uploads"] == 0
    assert usage_of(farm, "bob")["open_upload_bytes"] == 0

    assert farm.client.delete(f"/api/uploads/{upload_id}", headers=bearer(alice)).status_code == 204
    assert usage_of(farm, "alice")["open_upload_bytes"] == 0
    assert farm.client.get("/api/admin/usage", headers=farm.admin).json()["open_uploads"] == 0


def test_an_upload_left_behind_of_a_blob_stored_since_stops_counting(farm: Farm) -> None:
    """Alice's upload broke off, then she sent the file whole: asking for the upload
    again answers it is stored, and the unfinished one no longer holds her quota."""
    alice = make_user(farm, "alice")
    data = os.urandom(SIZE)
    upload_id = start(farm, alice, data).json()["id"]
    send(farm, alice, upload_id, 0, data[:10_000])
    sha = hashlib.sha256(data).hexdigest()
    assert (
        farm.client.put(f"/api/blobs/{sha}", headers=bearer(alice), content=data).status_code == 201
    )
    again = start(farm, alice, data)
    assert again.status_code == 200 and again.json()["complete"] is True, again.text
    assert open_ids(farm, alice) == []
    assert usage_of(farm, "alice")["open_upload_reserved_bytes"] == 0


def test_expired_uploads_stop_counting(settings: ManagerSettings) -> None:
    """Uploads nobody sent a byte to for `blob_retention_days` are swept before the
    limits are asked, so an abandoned upload blocks no one for longer than that
    (the sweep runs at most once per `gc_interval`: here, at the manager's first
    upload after a restart)."""
    with open_farm(settings) as farm:
        alice = make_user(farm, "alice")
        for _ in range(3):
            start(farm, alice, os.urandom(10))
        assert start(farm, alice, os.urandom(10)).status_code == 409
    week_ago = time.time() - (settings.blob_retention_days + 1) * 86400
    for path in (settings.blob_dir / "tmp" / "partial").iterdir():
        os.utime(path, (week_ago, week_ago))

    with open_farm(settings) as restarted:
        fresh = start(restarted, alice, os.urandom(10))
        assert fresh.status_code == 201, fresh.text
        assert open_ids(restarted, alice) == [fresh.json()["id"]]


# ------------------------------------------- the client, against a real manager


@dataclass
class LimitedFarm(LocalFarm):
    """A real manager allowing two unfinished uploads per user."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "FARMHAND_MAX_OPEN_UPLOADS": "2"}


class Crashed(Exception):
    """Stands for `farmhand submit` dying mid-transfer."""


def test_a_client_that_crashed_at_the_limit_resumes_its_uploads(tmp_path: Path) -> None:
    farm = LimitedFarm(tmp_path / "farm")
    try:
        farm.start_manager("--user-quota-bytes", str(20 * 1024**2))
        answer = httpx.post(
            farm.url + "/api/admin/users",
            headers=bearer(farm.admin_token),
            json={"name": "alice"},
        )
        assert answer.status_code == 201, answer.text
        alice = answer.json()["token"]
        size = 6 * 1024**2
        files = {}
        for name in ("a.bin", "b.bin"):
            (tmp_path / name).write_bytes(os.urandom(size))
            files[name] = tmp_path / name
        entries = hash_files(files)
        sent = 0

        def crash_halfway(nbytes: int, done: int) -> None:
            nonlocal sent
            sent += nbytes
            if sent >= 2 * 1024**2:  # every thread stops at its next chunk
                raise Crashed

        with FarmhandClient(farm.url, alice) as client, pytest.raises(Crashed):
            Uploader(client, threads=2, advance=crash_halfway, resumable_from=1).upload(entries)

        with FarmhandClient(farm.url, alice) as client:
            # Both uploads are unfinished: alice is at the limit for new ones...
            with pytest.raises(FarmhandError) as refused:
                client.start_upload(hashlib.sha256(b"another").hexdigest(), 7)
            assert refused.value.status_code == 409
            assert "2 unfinished uploads" in str(refused.value)
            arrived = sum(client.start_upload(e.sha256, e.size).offset for e in entries.values())
            assert 0 < arrived < 2 * size
            # ...and the same client, run again, finishes its own.
            report = Uploader(client, threads=2, resumable_from=1).upload(entries)
            assert client.missing_blobs([e.sha256 for e in entries.values()]) == []
        assert report.uploaded_files == 2
        assert report.bytes_sent == 2 * size - arrived, "only what had not arrived"
        listed = httpx.get(farm.url + "/api/uploads", headers=bearer(alice))
        assert listed.json() == []
    except BaseException:
        print(farm.logs())
        raise
    finally:
        farm.stop()
