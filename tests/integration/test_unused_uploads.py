"""Files a user uploaded that no job has ever used: they count for the uploader's quota,
and garbage collection removes them once their grace period has passed (not after the
retention, which is for files a deleted job used). A purged job's files stop counting
for its owner at once. The policy is `manager/storage/gc.py`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, Table, select
from sqlalchemy.orm import Session

from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import Blob
from farmhand.manager.storage.gc import collect_garbage
from tests.integration.conftest import Farm, make_settings
from tests.integration.test_limits import bearer, blend, make_user, put_blob, submit
from tests.integration.test_storage import age, gc, stored

MINUTE = timedelta(minutes=1)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """A 6 KiB quota, a one-minute grace period and the default 7-day retention."""
    settings = make_settings(
        tmp_path / "data",
        max_upload_bytes=4096,
        user_quota_bytes=6 * 1024,
        blob_grace_seconds=60.0,
        gc_interval=0,
    )
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def usage_of(farm: Farm, name: str) -> int:
    usage = farm.client.get("/api/admin/usage", headers=farm.admin).json()
    return int(next(u for u in usage["users"] if u["name"] == name)["bytes"])


def test_uploads_no_job_used_are_collected_after_the_grace_period(farm: Farm) -> None:
    """A user who uploaded without submitting was held over quota for the 7-day
    retention, told to delete jobs they did not have, and could delete no blob."""
    ann = make_user(farm, "ann")
    first, status = put_blob(farm, ann, blend(3000, b"a"))
    assert status == 201
    second, status = put_blob(farm, ann, blend(2500, b"b"))
    assert status == 201
    data = blend(2000, b"c")
    refused = farm.client.put(
        f"/api/blobs/{hashlib.sha256(data).hexdigest()}", headers=bearer(ann), content=data
    )
    assert refused.status_code == 413
    detail = refused.json()["detail"]
    assert "5.4 KiB of it by files you uploaded that no job uses" in detail, detail
    assert "removed about 1 minute after you last uploaded them" in detail, detail
    assert "delete old jobs" not in detail, "ann has no jobs"

    for sha in (first, second):
        age(farm, sha, 2 * MINUTE)  # the grace period has passed, the retention not
    report = gc(farm)

    assert report["removed"] == 2
    assert not stored(farm, first) and not stored(farm, second)
    assert usage_of(farm, "ann") == 0
    assert put_blob(farm, ann, data)[1] == 201


def test_a_purged_jobs_files_stop_counting_for_its_owner_at_once(farm: Farm) -> None:
    """The files stay for garbage collection (a client was just told they are here),
    but they are kept for the farm's sake: the owner's usage drops with the purge."""
    ann = make_user(farm, "ann")
    scene, _ = put_blob(farm, ann, blend(3000, b"a"))
    code, answer = submit(farm, ann, {"a.blend": scene}, "a.blend")
    assert code == 202, answer
    job_id = int(json.loads(answer)["id"])
    farm.client.post("/api/blobs/missing", headers=bearer(ann), json={"hashes": [scene]})
    assert usage_of(farm, "ann") == 3000

    purged = farm.client.delete(f"/api/jobs/{job_id}?purge=true", headers=bearer(ann))

    assert purged.status_code == 204, purged.text
    assert stored(farm, scene), "touched within the grace period: left to gc"
    assert usage_of(farm, "ann") == 0
    assert put_blob(farm, ann, blend(4000, b"big"))[1] == 201, "3000 + 4000 > 6 KiB before"


def test_a_blob_a_job_used_is_kept_for_the_retention(farm: Farm) -> None:
    """Unreferenced after its job's deletion, it stays the retention (7 days), so that
    a resubmission uploads nothing; a never-used upload as old goes."""
    ann = make_user(farm, "ann")
    scene, _ = put_blob(farm, ann, blend(3000, b"a"))
    code, answer = submit(farm, ann, {"a.blend": scene}, "a.blend")
    assert code == 202, answer
    job_id = int(json.loads(answer)["id"])
    farm.client.post("/api/blobs/missing", headers=bearer(ann), json={"hashes": [scene]})
    assert farm.client.delete(f"/api/jobs/{job_id}?purge=true", headers=bearer(ann))
    unused, _ = put_blob(farm, ann, blend(1000, b"u"))
    for sha in (scene, unused):
        age(farm, sha, timedelta(days=1))

    assert gc(farm)["removed"] == 1
    assert stored(farm, scene) and not stored(farm, unused)
    missing = farm.client.post("/api/blobs/missing", headers=bearer(ann), json={"hashes": [scene]})
    assert missing.json()["missing"] == [], "the resubmission uploads nothing"

    age(farm, scene, timedelta(days=8))
    assert gc(farm)["removed"] == 1
    assert not stored(farm, scene)


def test_a_runners_output_is_a_used_blob(farm: Farm) -> None:
    """Frames are recorded by their own route: their blobs are marked used there too."""
    from tests.integration.conftest import png_bytes

    ann = make_user(farm, "ann")
    scene, _ = put_blob(farm, ann, blend(1000, b"a"))
    code, answer = submit(farm, ann, {"a.blend": scene}, "a.blend")
    assert code == 202, answer
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    frame = png_bytes()
    put = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/frames/1.png", headers=runner, content=frame
    )
    assert put.status_code == 201, put.text
    context = farm.client.app.state.farm  # type: ignore[attr-defined]
    with context.db.read() as session:
        used = {sha: at for sha, at in session.execute(select(Blob.sha256, Blob.used_at))}
    assert used[scene] is not None
    assert used[hashlib.sha256(frame).hexdigest()] is not None


def test_blobs_stored_before_0019_count_as_used(tmp_path: Path) -> None:
    """Which of them a job once named is unknown: they keep today's retention."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, "0018")
    day_ago = utcnow() - timedelta(days=1)
    with engine.begin() as connection:
        blobs = Table("blobs", MetaData(), autoload_with=connection)
        connection.execute(blobs.insert().values(sha256="ab" * 32, size=3, created_at=day_ago))
    upgrade(engine)
    with Session(engine) as session:
        blob = session.get(Blob, "ab" * 32)
        assert blob is not None and blob.used_at is not None
    engine.dispose()
    settings = make_settings(
        tmp_path / "data", database_url=url, blob_grace_seconds=60.0, gc_interval=0
    )
    with TestClient(create_app(settings)) as client:
        context = client.app.state.farm  # type: ignore[attr-defined]
        assert collect_garbage(context, utcnow()).removed == 0
