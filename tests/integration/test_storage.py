"""Housekeeping of the blob store through the API: garbage collection, what deleting a
job frees, usage for admins; and the outputs' downloads (one frame, a streamed zip, the
job's inputs, named by a template)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Blob
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings, png_bytes
from tests.integration.test_scheduling import add_user

DAY = timedelta(days=1)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """Unreferenced blobs are kept 2 days; anything touched within a minute is spared."""
    settings = make_settings(
        tmp_path / "data", blob_retention_days=2.0, blob_grace_seconds=60.0, gc_interval=0
    )
    with TestClient(create_app(settings)) as client:
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]


def put(farm: Farm, data: bytes, headers: dict[str, str] | None = None) -> str:
    sha = hashlib.sha256(data).hexdigest()
    answer = farm.client.put(f"/api/blobs/{sha}", content=data, headers=headers or farm.admin)
    assert answer.status_code in (200, 201), answer.text
    return sha


def create_job(farm: Farm, files: dict[str, str], headers: dict[str, str] | None = None) -> int:
    answer = farm.client.post(
        "/api/jobs",
        headers=headers or farm.admin,
        json={"main_file": "scene.blend", "files": files, "frame_start": 1, "frame_end": 1},
    )
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def age(farm: Farm, sha: str, by: timedelta) -> None:
    """Pretend the blob was uploaded (and last touched) `by` ago."""
    when = utcnow() - by
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        session.execute(
            update(Blob).where(Blob.sha256 == sha).values(created_at=when, touched_at=None)
        )


def stored(farm: Farm, sha: str) -> bool:
    return (farm.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:]).is_file()


def gc(farm: Farm) -> dict[str, int]:
    answer = farm.client.post("/api/admin/gc", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_gc_removes_only_unreferenced_blobs_past_their_retention(farm: Farm) -> None:
    blend = put(farm, FAKE_BLEND)
    create_job(farm, {"scene.blend": blend})
    abandoned = put(farm, b"an upload whose job never came")
    recent = put(farm, b"unreferenced for a day")
    fresh = put(farm, b"uploaded a moment ago, job on its way")
    for sha in (blend, abandoned):
        age(farm, sha, 3 * DAY)
    age(farm, recent, DAY)

    report = gc(farm)

    assert report["removed"] == 1
    assert report["freed_bytes"] == len(b"an upload whose job never came")
    assert report["kept_unreferenced"] == 2
    assert not stored(farm, abandoned)
    assert stored(farm, blend), "a blob a job references is never collected, however old"
    assert stored(farm, recent) and stored(farm, fresh)
    missing = farm.client.post(
        "/api/blobs/missing", headers=farm.admin, json={"hashes": [abandoned, blend]}
    )
    assert missing.json()["missing"] == [abandoned]


def test_a_blob_a_client_was_just_told_about_survives_gc(farm: Farm) -> None:
    """The race: the client asks what is missing, skips the upload, then creates the job."""
    old = put(farm, b"old but about to be reused")
    age(farm, old, 10 * DAY)
    answer = farm.client.post("/api/blobs/missing", headers=farm.admin, json={"hashes": [old]})
    assert answer.json()["missing"] == []

    assert gc(farm)["removed"] == 0
    assert stored(farm, old)

    age(farm, old, 10 * DAY)  # nobody came back for it
    assert gc(farm)["removed"] == 1
    assert not stored(farm, old)


def test_gc_removes_stray_files_but_not_young_ones(farm: Farm) -> None:
    """A crash between storing a file and recording it leaves a file without a row."""
    root = farm.data_dir / "blobs" / "sha256"
    stray_old, stray_young = (hashlib.sha256(d).hexdigest() for d in (b"old", b"young"))
    for sha in (stray_old, stray_young):
        (root / sha[:2]).mkdir(parents=True, exist_ok=True)
        (root / sha[:2] / sha[2:]).write_bytes(b"x")
    long_ago = (utcnow() - DAY).timestamp()
    os.utime(root / stray_old[:2] / stray_old[2:], (long_ago, long_ago))

    assert gc(farm)["stray_files"] == 1
    assert not stored(farm, stray_old)
    assert stored(farm, stray_young), "a young file may be an upload whose row is on its way"


def test_deleting_a_job_frees_at_once_what_only_it_used(farm: Farm) -> None:
    blend = put(farm, FAKE_BLEND)
    own = put(farm, b"texture only job 1 uses")
    shared = put(farm, b"texture both jobs use")
    first = create_job(farm, {"scene.blend": blend, "own.png": own, "shared.png": shared})
    second = create_job(farm, {"scene.blend": blend, "shared.png": shared})
    for sha in (blend, own, shared):
        age(farm, sha, timedelta(minutes=5))

    gone = farm.client.delete(f"/api/jobs/{first}?purge=true", headers=farm.admin)

    assert gone.status_code == 204
    assert not stored(farm, own)
    assert stored(farm, blend) and stored(farm, shared), "still used by the second job"
    assert farm.client.get(f"/api/jobs/{second}", headers=farm.admin).status_code == 200

    # A client just learned `shared` is here (it will not upload it again): deleting the
    # last job using it leaves it to garbage collection; the .blend goes at once.
    farm.client.post("/api/blobs/missing", headers=farm.admin, json={"hashes": [shared]})
    assert farm.client.delete(f"/api/jobs/{second}?purge=true", headers=farm.admin).status_code
    assert not stored(farm, blend)
    assert stored(farm, shared)
    assert create_job(farm, {"scene.blend": put(farm, FAKE_BLEND), "shared.png": shared})


def test_usage_per_user_and_of_the_disk_for_admins_only(farm: Farm) -> None:
    alice = add_user(farm, "alice")
    blend = put(farm, FAKE_BLEND, alice)
    texture = put(farm, b"t" * 1000, alice)
    create_job(farm, {"scene.blend": blend, "tex.png": texture}, alice)
    create_job(farm, {"scene.blend": blend}, alice)  # the same .blend counts once
    create_job(farm, {"scene.blend": put(farm, FAKE_BLEND)})  # admin shares it
    put(farm, b"u" * 500)  # unreferenced

    assert farm.client.get("/api/admin/usage", headers=alice).status_code == 403
    answer = farm.client.get("/api/admin/usage", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    usage = answer.json()
    users = {u["name"]: u for u in usage["users"]}
    assert users["alice"] == {
        "user_id": users["alice"]["user_id"],
        "name": "alice",
        "jobs": 2,
        "bytes": len(FAKE_BLEND) + 1000,
    }
    assert users["admin"]["bytes"] == len(FAKE_BLEND)
    assert usage["blobs"] == 3
    assert usage["total_bytes"] == len(FAKE_BLEND) + 1500
    assert usage["unreferenced_bytes"] == 500
    assert 0 < usage["disk_free_bytes"] <= usage["disk_total_bytes"]


def test_usage_counts_outputs_too(farm: Farm) -> None:
    job_id = create_job(farm, {"scene.blend": put(farm, FAKE_BLEND)})
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner).json()
    frame = png_bytes()
    answer = farm.client.post(
        f"/api/runner/files/{job_id}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("0001.png", frame, "image/png")},
    )
    assert answer.status_code == 201, answer.text
    usage = farm.client.get("/api/admin/usage", headers=farm.admin).json()
    admin = next(u for u in usage["users"] if u["name"] == "admin")
    assert admin["bytes"] == len(FAKE_BLEND) + len(frame)
