"""The thumbnail cache (`<data-dir>/thumbnails/`) stays bounded: a few sizes per frame,
a blob's thumbnails go when the blob goes, garbage collection sweeps what is left."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Blob
from farmhand.manager.storage import thumbnail_cache
from farmhand.manager.storage.thumbnail_cache import SIZES, served_size, sweep
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.test_web_api import bearer, make_user

LONG_AGO = (utcnow() - timedelta(days=1)).timestamp()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """Anything touched within a minute is spared by garbage collection."""
    settings = make_settings(tmp_path / "data", blob_grace_seconds=60.0, gc_interval=0)
    with TestClient(create_app(settings)) as client:
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]


def png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def job_with_two_frames(farm: Farm, headers: dict[str, str]) -> tuple[int, list[dict[str, str]]]:
    """A job of `headers`' user whose two frames (2000 by 1000 px) were rendered."""
    job_id = submit_stand_in(farm.client, headers, frame_start=1, frame_end=2, chunk_size=2)
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    for frame, colour in ((1, "red"), (2, "blue")):
        stored = farm.client.post(
            f"/api/runner/files/{job_id}/upload",
            headers=runner,
            data={"task_id": str(task["task_id"]), "frame": str(frame)},
            files={"file": (f"frame_{frame:04}.png", png(2000, 1000, colour), "image/png")},
        )
        assert stored.status_code == 201, stored.text
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=headers).json()
    return job_id, [f for f in files if f["kind"] == "output"]


def cached(farm: Farm) -> list[Path]:
    folder = farm.data_dir / "thumbnails"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def blob_stored(farm: Farm, sha: str) -> bool:
    return (farm.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:]).is_file()


def gc(farm: Farm) -> dict[str, int]:
    answer = farm.client.post("/api/admin/gc", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_requested_size_is_served_as_the_next_fixed_one() -> None:
    assert [served_size(n) for n in (16, 17, 64, 65, 128, 200, 256, 257)] == [
        64,
        64,
        64,
        128,
        128,
        256,
        256,
        512,
    ]
    assert [served_size(n) for n in (1024, 1025, 1600, 1601, 2048)] == [
        1024,
        1600,
        1600,
        2048,
        2048,
    ]
    for size in SIZES:
        assert served_size(size) == size


def test_the_web_uis_sizes_are_served_exactly() -> None:
    """The job page's grid asks for the default (256), its large view for 1600."""
    app_js = Path(__file__).parents[2] / "src/farmhand/manager/web/static/app.js"
    asked = {int(n) for n in re.findall(r"thumbUrl\([^)]*\)}&size=(\d+)", app_js.read_text())}
    assert asked == {1600}, "the web UI asks for other sizes now: keep them in SIZES"
    for size in (*asked, thumbnail_cache.DEFAULT_SIZE):
        assert served_size(size) == size


def test_the_cache_holds_a_few_sizes_per_frame_and_goes_with_the_job(farm: Farm) -> None:
    """The report's steps: bob's two frames asked for at 16, 17, 18, 256 and 2048 px,
    then the job deleted and garbage collected: nothing of it stays in the cache."""
    bob = bearer(make_user(farm, "bob"))
    job_id, outputs = job_with_two_frames(farm, bob)
    shown: dict[int, tuple[int, int]] = {}
    for output in outputs:
        for size in (16, 17, 18, 256, 2048, 1600, 300):
            answer = farm.client.get(
                f"/api/jobs/{job_id}/files/{output['id']}/thumbnail",
                params={"size": size},
                headers=bob,
            )
            assert answer.status_code == 200, answer.text
            with Image.open(io.BytesIO(answer.content)) as image:
                shown[size] = image.size
    assert shown[16] == shown[17] == shown[18] == (64, 32), "served at 64 px"
    assert shown[256] == (256, 128) and shown[1600] == (1600, 800), "the web UI's, exactly"
    assert shown[300] == (512, 256)
    assert shown[2048] == (2000, 1000), "never enlarged past the frame"
    files = cached(farm)
    assert len(files) == 2 * 5, [f.name for f in files]  # 64, 256, 512, 1600, 2048 each
    for size in (15, 2049):
        too = farm.client.get(
            f"/api/jobs/{job_id}/files/{outputs[0]['id']}/thumbnail",
            params={"size": size},
            headers=bob,
        )
        assert too.status_code == 400, "outside 16 to 2048, as before"

    assert farm.client.delete(f"/api/jobs/{job_id}?purge=true", headers=bob).status_code == 204
    assert not any(blob_stored(farm, o["sha256"]) for o in outputs)
    assert cached(farm) == [], "a blob's thumbnails go with its file"
    gc(farm)
    assert cached(farm) == []


def test_a_thumbnail_removed_while_being_served_is_a_404(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting a job removes its cached thumbnails; a request that made one just before
    the purge removed it answered 500 ("File at path ... does not exist")."""
    from farmhand.manager.web import thumbnails

    bob = bearer(make_user(farm, "bob"))
    job_id, outputs = job_with_two_frames(farm, bob)
    made = thumbnails.thumbnail

    def made_then_purged(*args: object, **kwargs: object) -> Path:
        path = made(*args, **kwargs)  # type: ignore[arg-type]
        path.unlink()  # what the job's purge does to the cache meanwhile
        return path

    monkeypatch.setattr(thumbnails, "thumbnail", made_then_purged)
    answer = farm.client.get(f"/api/jobs/{job_id}/files/{outputs[0]['id']}/thumbnail", headers=bob)
    assert answer.status_code == 404, answer.text
    assert "deleted meanwhile" in answer.json()["detail"]
    monkeypatch.undo()
    again = farm.client.get(f"/api/jobs/{job_id}/files/{outputs[0]['id']}/thumbnail", headers=bob)
    assert again.status_code == 200 and again.headers["content-type"] == "image/jpeg"


def test_thumbnails_of_a_blob_kept_for_gc_go_when_gc_removes_it(farm: Farm) -> None:
    """A frame a client was just told about outlives its job's purge (the grace period):
    its thumbnail stays while it does, and goes with it."""
    job_id, outputs = job_with_two_frames(farm, farm.admin)
    kept = outputs[0]["sha256"]
    for output in outputs:
        url = f"/api/jobs/{job_id}/files/{output['id']}/thumbnail"
        assert farm.client.get(url, headers=farm.admin).status_code == 200
    farm.client.post("/api/blobs/missing", headers=farm.admin, json={"hashes": [kept]})
    assert farm.client.delete(f"/api/jobs/{job_id}?purge=true", headers=farm.admin)
    assert blob_stored(farm, kept)
    assert [p.name for p in cached(farm)] == [f"{kept}-v2-256.jpg"]

    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        session.execute(
            update(Blob)
            .where(Blob.sha256 == kept)
            .values(created_at=utcnow() - timedelta(days=30), touched_at=None)
        )
    assert gc(farm)["removed"] == 1
    assert not blob_stored(farm, kept)
    assert cached(farm) == []


def thumbnail_file(cache: Path, sha: str, name: str, *, old: bool = True) -> Path:
    path = cache / sha[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"jpeg")
    if old:
        os.utime(path, (LONG_AGO, LONG_AGO))
    return path


def test_gc_sweeps_what_the_cache_should_no_longer_hold(farm: Farm) -> None:
    """Left by an earlier version (any size from 16 to 2048 was cached, nothing removed
    them) or by a race (a thumbnail written as its blob went): thumbnails of blobs
    without a row, sizes and recipes the manager no longer makes, abandoned temporary
    files. Young files are spared: one may be being written or served right now."""
    job_id, outputs = job_with_two_frames(farm, farm.admin)
    live = outputs[0]["sha256"]
    url = f"/api/jobs/{job_id}/files/{outputs[0]['id']}/thumbnail"
    assert farm.client.get(url, headers=farm.admin).status_code == 200
    [made] = cached(farm)
    os.utime(made, (LONG_AGO, LONG_AGO))  # served for a long time: stays
    cache = farm.data_dir / "thumbnails"
    gone = hashlib.sha256(b"a frame deleted long ago").hexdigest()
    swept = [
        thumbnail_file(cache, gone, f"{gone}-v2-256.jpg"),
        thumbnail_file(cache, gone, f"{gone}-v2-17.jpg"),
        thumbnail_file(cache, live, f"{live}-v2-17.jpg"),
        thumbnail_file(cache, live, f"{live}-v1-256.jpg"),
        thumbnail_file(cache, live, ".tmp-abandoned.jpg"),
    ]
    (cache / "placeholder-v1-EXR.jpg").write_bytes(b"jpeg")
    os.utime(cache / "placeholder-v1-EXR.jpg", (LONG_AGO, LONG_AGO))
    swept.append(cache / "placeholder-v1-EXR.jpg")
    (cache / "placeholder-v2-EXR.jpg").write_bytes(b"jpeg")
    kept = [
        made,
        cache / "placeholder-v2-EXR.jpg",
        thumbnail_file(cache, gone, f"{gone}-v2-64.jpg", old=False),
        thumbnail_file(cache, live, ".tmp-being-written.jpg", old=False),
        thumbnail_file(cache, live, "someone-elses-file.txt"),
    ]

    gc(farm)

    assert [p for p in swept if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_sweep_without_a_cache_is_a_no_op(tmp_path: Path) -> None:
    result = sweep(tmp_path / "thumbnails", set(), utcnow())
    assert (result.files, result.bytes) == (0, 0)
