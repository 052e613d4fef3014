"""Limits a user runs into: upload size, storage quota, body size and JSON depth.

Each answer must be a 4xx with a message that says which limit was hit, never a 500.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.api import limits
from farmhand.manager.api.limits import QuotaExceeded, json_depth
from farmhand.manager.app import create_app
from farmhand.manager.db.models import Job
from farmhand.manager.storage.usage import user_usage_bytes
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings
from tests.integration.held_work import Held, until
from tests.integration.test_heavy_work_turns import BURST, in_threads, sent_within


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def small_farm(tmp_path: Path) -> Iterator[Farm]:
    """A farm with tiny limits: 4 KiB uploads, 2 KiB JSON bodies, a 6 KiB quota."""
    settings = make_settings(
        tmp_path / "data",
        max_upload_bytes=4096,
        max_body_bytes=2048,
        user_quota_bytes=6 * 1024,
    )
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def make_user(farm: Farm, name: str) -> str:
    answer = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def blend(size: int, salt: bytes = b"") -> bytes:
    body = FAKE_BLEND + salt
    return body + b"\x00" * (size - len(body))


def put_blob(farm: Farm, token: str, data: bytes) -> tuple[str, int]:
    sha = hashlib.sha256(data).hexdigest()
    answer = farm.client.put(f"/api/blobs/{sha}", headers=bearer(token), content=data)
    return sha, answer.status_code


def submit(farm: Farm, token: str, files: dict[str, str], main: str) -> tuple[int, str]:
    answer = farm.client.post(
        "/api/jobs",
        headers=bearer(token),
        json={"main_file": main, "files": files, "frame_start": 1, "frame_end": 1},
    )
    return answer.status_code, answer.text


# ------------------------------------------------------------------ upload size


def test_an_upload_over_the_limit_is_413_with_the_limit_named(small_farm: Farm) -> None:
    token = make_user(small_farm, "ann")
    data = blend(5000)
    sha = hashlib.sha256(data).hexdigest()
    answer = small_farm.client.put(f"/api/blobs/{sha}", headers=bearer(token), content=data)
    assert answer.status_code == 413
    assert "4096 bytes" in answer.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while it streams
        yield data[:3000]
        yield data[3000:]

    streamed = small_farm.client.put(f"/api/blobs/{sha}", headers=bearer(token), content=chunks())
    assert streamed.status_code == 413, streamed.text
    multipart = small_farm.client.post(
        "/api/jobs",
        headers=bearer(token),
        files={"file": ("big.blend", blend(2 * 1024**2), "application/octet-stream")},
    )
    assert multipart.status_code == 413
    assert "upload" in multipart.json()["detail"]


# -------------------------------------------------------------------- quota


def test_quota_counts_distinct_blobs_and_refuses_what_would_pass_it(small_farm: Farm) -> None:
    ann = make_user(small_farm, "ann")
    bob = make_user(small_farm, "bob")
    first, status = put_blob(small_farm, ann, blend(3000, b"a"))
    assert status == 201
    assert submit(small_farm, ann, {"a.blend": first}, "a.blend")[0] == 202
    # The same blob again in a second job counts once.
    assert submit(small_farm, ann, {"b.blend": first}, "b.blend")[0] == 202
    second, status = put_blob(small_farm, ann, blend(2500, b"b"))
    assert status == 201
    assert submit(small_farm, ann, {"c.blend": second}, "c.blend")[0] == 202

    _, status = put_blob(small_farm, ann, blend(2000, b"c"))
    assert status == 413  # 3000 + 2500 + 2000 > 6 KiB
    code, text = submit(small_farm, ann, {"d.blend": first, "e.blend": second}, "d.blend")
    assert code == 202, text  # blobs ann already uses cost nothing more

    bobs, status = put_blob(small_farm, bob, blend(2000, b"c"))
    assert status in (200, 201)  # bob has his own quota
    code, text = submit(small_farm, ann, {"f.blend": bobs}, "f.blend")
    # ann's own upload of these bytes was refused before they arrived: the file is
    # bob's, and naming it by its hash tells ann nothing (tests/integration/test_blob_access.py)
    assert code == 400
    assert "not uploaded first" in json.loads(text)["detail"]
    upload = small_farm.client.post(
        "/api/jobs",
        headers=bearer(ann),
        files={"file": ("g.blend", blend(2000, b"g"), "application/octet-stream")},
    )
    assert upload.status_code == 413
    assert "quota" in upload.json()["detail"]
    # Admins run the farm: no quota for them.
    code, text = submit(small_farm, small_farm.admin_token, {"f.blend": bobs}, "f.blend")
    assert code == 202, text


def test_uploads_no_job_uses_count_towards_the_quota(small_farm: Farm) -> None:
    """Uploading files and never submitting a job kept them on the disk, for no one's
    quota, until garbage collection: any number of uploads under the size limit
    passed. They are the uploader's until a job uses them or they are collected."""
    ann = make_user(small_farm, "ann")
    first, status = put_blob(small_farm, ann, blend(3000, b"a"))
    assert status == 201
    second, status = put_blob(small_farm, ann, blend(2500, b"b"))
    assert status == 201
    _, status = put_blob(small_farm, ann, blend(2000, b"c"))
    assert status == 413, "3000 + 2500 bytes never submitted + 2000 > 6 KiB"
    # Submitting them changes nothing: the same blobs, now a job's, counted once.
    assert submit(small_farm, ann, {"a.blend": first, "b.blend": second}, "a.blend")[0] == 202
    usage = small_farm.client.get("/api/admin/usage", headers=small_farm.admin).json()
    assert next(u for u in usage["users"] if u["name"] == "ann")["bytes"] == 5500
    _, status = put_blob(small_farm, ann, blend(500, b"d"))
    assert status == 201, "5500 + 500 is within 6 KiB"


def test_user_usage_counts_inputs_and_outputs_of_own_jobs(small_farm: Farm) -> None:
    ann = make_user(small_farm, "ann")
    sha, _ = put_blob(small_farm, ann, blend(1000, b"x"))
    code, text = submit(small_farm, ann, {"a.blend": sha}, "a.blend")
    assert code == 202, text
    job_id = json.loads(text)["id"]
    runner = small_farm.register_runner()
    task = small_farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    from tests.integration.conftest import png_bytes

    frame = png_bytes()
    stored = small_farm.client.post(
        f"/api/runner/files/{job_id}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("0001.png", frame, "image/png")},
    )
    assert stored.status_code == 201, stored.text
    context = small_farm.client.app.state.farm  # type: ignore[attr-defined]
    with context.db.read() as session:
        owner = session.get(Job, job_id).owner_id
        assert user_usage_bytes(session, owner) == 1000 + len(frame)
        assert user_usage_bytes(session, owner + 1000) == 0


# ------------------------------------------------------------- bodies and JSON


def test_an_oversized_json_body_is_refused_before_it_is_read(small_farm: Farm) -> None:
    answer = small_farm.client.post(
        "/api/tokens", headers=small_farm.admin, json={"name": "x" * 4000}
    )
    assert answer.status_code == 413
    assert "request body" in answer.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        yield b"x" * 4000
        yield b'"}'

    streamed = small_farm.client.post(
        "/api/tokens",
        headers={**small_farm.admin, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize("depth", [40, 600, 5000])
def test_deeply_nested_json_is_a_400_not_a_500(farm: Farm, depth: int) -> None:
    body = '{"name": ' + "[" * depth + "]" * depth + "}"
    for path in ("/api/tokens", "/api/blobs/missing", "/api/jobs"):
        answer = farm.client.post(
            path, headers={**farm.admin, "Content-Type": "application/json"}, content=body
        )
        assert answer.status_code == 400, (path, answer.text)
        assert "nests deeper than 32 levels" in answer.json()["detail"]


@pytest.mark.parametrize(("depth", "refused"), [(32, False), (33, True)])
def test_the_depth_limit_is_exact(farm: Farm, depth: int, refused: bool) -> None:
    # The object is one level; the list brackets make up the rest. A manifest's route
    # checks its own body, once the caller is known.
    body = '{"name": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    for path in ("/api/tokens", "/api/blobs/missing", "/api/jobs"):
        answer = farm.client.post(
            path, headers={**farm.admin, "Content-Type": "application/json"}, content=body
        )
        assert ("nests deeper than 32 levels" in answer.text) is refused, (path, answer.text)


def test_a_manifest_from_nobody_is_refused_before_its_depth_is_looked_at(farm: Farm) -> None:
    body = "[" * 5000 + "]" * 5000
    for path in ("/api/blobs/missing", "/api/jobs"):
        answer = farm.client.post(path, headers={"Content-Type": "application/json"}, content=body)
        assert answer.status_code == 401, (path, answer.text)


def test_runners_are_answered_while_bodies_from_nobody_are_scanned(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies with more brackets than the depth limit, from anyone, are scanned before
    anyone knows who sent them: on the event loop, a few such bodies a second (a
    megabyte of `[]` is a few tenths of a second's scan) stopped every runner's
    heartbeat. Here the scans are held for as long as the test likes, more of them at
    once than the routes have threads, and a runner's heartbeat is answered meanwhile."""
    runner = farm.register_runner()
    scans = Held(limits.json_depth)
    monkeypatch.setattr(limits, "json_depth", scans)
    body = "[" + "[]," * 100 + "[]]"  # valid, shallow, and too many brackets to count

    def from_nobody() -> int:
        answer = farm.client.post(
            "/api/tokens", headers={"Content-Type": "application/json"}, content=body
        )
        return int(answer.status_code)

    threads, answers = in_threads([from_nobody] * BURST)
    try:
        until(lambda: scans.began, "a body from nobody was being scanned")
        beat = sent_within(
            lambda: farm.client.post("/api/runner/heartbeat", headers=runner, json={})
        )
        assert beat.status_code == 200, beat.text
    finally:
        scans.release()
        for thread in threads:
            thread.join(timeout=60)
    assert answers == [401] * BURST, "each was scanned, then refused for want of a token"


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(json.dumps({"a": "[[[[{{{{", "b": ['\\"[']}).encode()) == 2
    assert json_depth(b"[" * 100) == 100
    assert json_depth(b"[" * 100, stop_above=32) == 33, "a scan stops once too deep"
    assert json_depth(b'{"a": 1}') == 1


def test_ids_beyond_what_the_database_holds_are_a_400(farm: Farm) -> None:
    """Found by schemathesis: a 25-digit id used to reach SQLite and come back a 500."""
    huge = "9" * 25
    for path in (f"/api/jobs/{huge}", f"/api/admin/runners/-{huge}/actions"):
        method = "GET" if path.startswith("/api/jobs") else "POST"
        answer = farm.client.request(method, path, headers=farm.admin, json={"action": "drain"})
        assert answer.status_code == 400, (path, answer.text)
        assert "out of range" in answer.json()["detail"]


def test_a_quota_passed_by_a_few_bytes_says_so_in_bytes() -> None:
    """Rounded to tenths of a KiB, 6,145 bytes against a 6,144-byte quota read '6.0 KiB of
    your 6.0 KiB quota': as if at the limit, not over it."""
    detail = str(QuotaExceeded(current=5500, usage=6145, quota=6144).detail)
    assert "your usage to 6,145 bytes of your 6,144 bytes quota" in detail, detail
    far = str(QuotaExceeded(current=5500, usage=9000, quota=6144).detail)
    assert "to 8.8 KiB of your 6.0 KiB quota" in far, far
