"""`POST /api/blend-info`, the web Submit page's upload, is held to the per-user storage
quota as every upload is, and a file it refuses costs its sender nothing (QA round 10:
an over-quota student got 200 for more .blend files, and three 20 MB junk "blends"
answered 422 stayed stored, taking their usage to 2153 % of the quota).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from farmhand.manager.api import blendinfo
from farmhand.manager.api.limits import QuotaExceeded
from farmhand.manager.app import create_app
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import Farm, make_settings
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
    held = {"current": 9000, "usage": 9000, "quota": 6144, "unused": 4000, "grace_seconds": 60}
    upload = str(QuotaExceeded(**held).detail)  # type: ignore[arg-type]
    submitting = str(QuotaExceeded(**held, submitting=True).detail)
    assert "submit the job using them" in upload
    assert "submit the job" not in submitting
    assert "delete old jobs" in submitting and "ask an admin for a larger quota" in submitting


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
