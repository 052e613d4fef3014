"""Housekeeping of the blob store through the API: garbage collection, what deleting a
job frees, usage for admins; and the outputs' downloads (one frame, a streamed zip, the
job's inputs, named by a template)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, insert, update
from typer.testing import CliRunner

from farmhand.cli.app import app
from farmhand.localfarm import local_farm
from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Blob
from farmhand.manager.storage.gc import remove_blob_files
from farmhand.manager.storage.zipplan import ZipEntry, ZipPlan, crc32_of
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobSettings, JobStatus
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings, png_bytes
from tests.integration.postgres import fresh_database, postgres_bin
from tests.integration.test_farm_end_to_end import finished
from tests.integration.test_scheduling import add_user
from tests.integration.test_web_api import sign_in
from tests.integration.waiting import wait_for

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
    """Retention is for blobs a job used; one no job ever used goes after the grace
    period (test_unused_uploads.py)."""
    blend = put(farm, FAKE_BLEND)
    create_job(farm, {"scene.blend": blend})
    abandoned = put(farm, b"a deleted job's file, unreferenced for 3 days")
    recent = put(farm, b"a deleted job's file, unreferenced for a day")
    gone = create_job(farm, {"scene.blend": blend, "a": abandoned, "r": recent})
    touched = {"hashes": [abandoned, recent]}  # so the purge leaves them to gc
    farm.client.post("/api/blobs/missing", headers=farm.admin, json=touched)
    assert farm.client.delete(f"/api/jobs/{gone}?purge=true", headers=farm.admin)
    fresh = put(farm, b"uploaded a moment ago, job on its way")
    for sha in (blend, abandoned):
        age(farm, sha, 3 * DAY)
    age(farm, recent, DAY)

    report = gc(farm)

    assert report["removed"] == 1
    assert report["freed_bytes"] == len(b"a deleted job's file, unreferenced for 3 days")
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


def test_a_late_workers_frame_is_refused_and_its_bytes_collected(farm: Farm) -> None:
    """The manager stores a frame's bytes before it looks whether the task is still the
    runner's (the form parser has read them anyway): a late one is refused, nothing
    records it, and garbage collection removes the file as a stray."""
    blend = put(farm, FAKE_BLEND)
    job_id = create_job(farm, {"scene.blend": blend})
    holder, late = farm.register_runner("w1"), farm.register_runner("w2")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=holder).json()
    frame = png_bytes(colour="blue")
    answer = farm.client.post(
        f"/api/runner/files/{job_id}/upload",
        headers=late,
        data={"task_id": str(task["task_id"]), "frame": str(task["frames"][0])},
        files={"file": ("0001.png", frame, "image/png")},
    )
    assert answer.status_code == 409, answer.text
    outputs = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    assert [f for f in outputs if f["kind"] == "output"] == []
    sha = hashlib.sha256(frame).hexdigest()
    path = farm.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:]
    long_ago = (utcnow() - DAY).timestamp()
    os.utime(path, (long_ago, long_ago))  # as if the grace period had passed

    assert gc(farm)["stray_files"] == 1
    assert not stored(farm, sha)


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
    # Garbage collection's two clocks, as the Storage page says them.
    assert (usage["blob_retention_days"], usage["blob_grace_seconds"]) == (2.0, 60.0)
    users = {u["name"]: u for u in usage["users"]}
    assert users["alice"] == {
        "user_id": users["alice"]["user_id"],
        "name": "alice",
        "role": "user",
        "jobs": 2,
        "bytes": len(FAKE_BLEND) + 1000,
        "open_uploads": 0,  # unfinished resumable uploads: test_upload_session_limits.py
        "open_upload_bytes": 0,
        "open_upload_reserved_bytes": 0,
    }
    assert users["admin"]["bytes"] == len(FAKE_BLEND) + 500, "the unreferenced upload too"
    assert users["admin"]["role"] == "admin"
    assert usage["blobs"] == 3
    assert usage["total_bytes"] == len(FAKE_BLEND) + 1500
    assert usage["unreferenced_bytes"] == 500
    assert usage["open_uploads"] == usage["open_upload_bytes"] == 0
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


def test_usage_reports_the_per_user_quota(farm: Farm, tmp_path: Path) -> None:
    """The storage page shows each user's share of the quota: the API says what it is."""
    usage = farm.client.get("/api/admin/usage", headers=farm.admin).json()
    assert usage["user_quota_bytes"] is None, "no quota configured"

    settings = make_settings(tmp_path / "quota", user_quota_bytes=5 * 1024**2, gc_interval=0)
    with TestClient(create_app(settings)) as client:
        quota = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]
        blend = put(quota, FAKE_BLEND)
        create_job(quota, {"scene.blend": blend})
        answer = client.get("/api/admin/usage", headers=quota.admin)
        assert answer.status_code == 200, answer.text
        usage = answer.json()
    assert usage["user_quota_bytes"] == 5 * 1024**2
    admin = next(u for u in usage["users"] if u["name"] == "admin")
    assert admin["bytes"] == len(FAKE_BLEND)


def test_the_storage_page_is_for_admins_only(farm: Farm) -> None:
    answer = farm.client.get("/storage", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/storage"

    sign_in(farm)
    page = farm.client.get("/storage")
    assert page.status_code == 200, page.text
    assert 'data-page="storage"' in page.text
    assert '<a href="/storage" aria-current="page">Storage</a>' in page.text
    assert 'href="/storage"' in farm.client.get("/").text, "admins have it in the nav"

    alice = add_user(farm, "alice")["Authorization"].removeprefix("Bearer ")
    farm.client.cookies.clear()
    sign_in(farm, alice)
    refused = farm.client.get("/storage")
    assert refused.status_code == 403
    assert "Admins only" in refused.text
    assert 'href="/storage"' not in farm.client.get("/").text, "people do not see the link"


# ------------------------------------------------------------------ downloads


def rendered_job(farm: Farm, name: str = "Shot 10", **settings: object) -> tuple[int, list[bytes]]:
    """A job whose frames 1-3 came back from a (scripted) worker."""
    blend = put(farm, FAKE_BLEND)
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={
            "main_file": "scene.blend",
            "files": {"scene.blend": blend, "tex/wood.png": put(farm, b"wood")},
            "frame_start": 1,
            "frame_end": 3,
            "chunk_size": 3,
            "name": name,
            **settings,
        },
    )
    assert answer.status_code == 202, answer.text
    job_id = int(answer.json()["id"])
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner).json()
    frames = [png_bytes(colour=colour) for colour in ("red", "green", "blue")]
    for frame, data in enumerate(frames, start=1):
        sent = farm.client.post(
            f"/api/runner/files/{job_id}/upload",
            headers=runner,
            data={"task_id": str(task["task_id"]), "frame": str(frame)},
            files={"file": (f"{frame:04d}.png", data, "image/png")},
        )
        assert sent.status_code == 201, sent.text
    return job_id, frames


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_zip_names_frames_by_the_template(farm: Farm) -> None:
    job_id, frames = rendered_job(farm)
    plain = farm.client.get(f"/api/jobs/{job_id}/outputs.zip", headers=farm.admin)
    assert unzip(plain.content) == {f"frames/{n:04d}.png": frames[n - 1] for n in (1, 2, 3)}

    templated = farm.client.get(
        f"/api/jobs/{job_id}/outputs.zip",
        params={"template": "{job}/{job_id}-{frame:03d}.{ext}"},
        headers=farm.admin,
    )
    assert templated.status_code == 200, templated.text
    expected = {f"Shot 10/{job_id}-{n:03d}.png": frames[n - 1] for n in (1, 2, 3)}
    assert unzip(templated.content) == expected


def test_a_jobs_own_template_names_its_downloads(farm: Farm) -> None:
    job_id, frames = rendered_job(farm, output_template="{job}/{frame:04d}.{ext}")
    answer = farm.client.get(f"/api/jobs/{job_id}/outputs.zip", headers=farm.admin)
    assert sorted(unzip(answer.content)) == [f"Shot 10/{n:04d}.png" for n in (1, 2, 3)]
    one = farm.client.get(f"/api/jobs/{job_id}/outputs/2", headers=farm.admin)
    assert one.status_code == 200
    assert one.content == frames[1]
    assert one.headers["x-output-name"] == "Shot 10/0002.png"
    assert 'filename="0002.png"' in one.headers["content-disposition"]
    assert farm.client.get(f"/api/jobs/{job_id}/outputs/9", headers=farm.admin).status_code == 404


@pytest.mark.parametrize(
    "hostile", ["../../{frame}.{ext}", "/tmp/{frame}", "{job.__init__}{frame}", "{job}.{ext}"]
)
def test_hostile_templates_are_refused(farm: Farm, hostile: str) -> None:
    job_id, _ = rendered_job(farm)
    answer = farm.client.get(
        f"/api/jobs/{job_id}/outputs.zip", params={"template": hostile}, headers=farm.admin
    )
    assert answer.status_code == 400
    submitted = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={
            "main_file": "scene.blend",
            "files": {"scene.blend": put(farm, FAKE_BLEND)},
            "output_template": hostile,
        },
    )
    assert submitted.status_code == 400, submitted.text
    assert "template" in submitted.text


@pytest.mark.parametrize(
    ("template", "said"),
    [("{frame:>2000000}", "width 2000000"), ("{frame:.2000000f}.{ext}", "precision 2000000")],
)
def test_a_huge_template_width_is_a_short_400(farm: Farm, template: str, said: str) -> None:
    """It was a 400 too, after formatting the name (1 GB for `{frame:>999999999}`, 5 GB
    of the manager's memory) and echoing it whole."""
    job_id, _ = rendered_job(farm)
    answers = [
        farm.client.post(
            "/api/jobs",
            headers=farm.admin,
            json={
                "main_file": "scene.blend",
                "files": {"scene.blend": put(farm, FAKE_BLEND)},
                "output_template": template,
            },
        ),
        farm.client.get(
            f"/api/jobs/{job_id}/outputs.zip", params={"template": template}, headers=farm.admin
        ),
        farm.client.get(
            f"/api/jobs/{job_id}/outputs/1", params={"template": template}, headers=farm.admin
        ),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text[:200]
        assert len(answer.content) < 300, f"{len(answer.content)} bytes: the name was echoed"
        assert f"{said} is over 1024" in answer.json()["detail"]


def test_the_jobs_inputs_download_as_a_zip(farm: Farm) -> None:
    job_id, _ = rendered_job(farm)
    answer = farm.client.get(f"/api/jobs/{job_id}/inputs.zip", headers=farm.admin)
    assert answer.status_code == 200
    assert unzip(answer.content) == {"scene.blend": FAKE_BLEND, "tex/wood.png": b"wood"}
    other = add_user(farm, "mallory")
    assert farm.client.get(f"/api/jobs/{job_id}/inputs.zip", headers=other).status_code == 404


def test_the_zip_streams_in_constant_memory(tmp_path: Path) -> None:
    """24 MiB of frames through the zip with at most a few MiB held at any time, and the
    first bytes out before the last file was even opened."""
    files = []
    for n in range(3):
        path = tmp_path / f"{n}.exr"
        path.write_bytes(os.urandom(8 * 1024 * 1024))
        files.append(path)
    entries = [
        ZipEntry(f"frames/{path.name}", path.name, path.stat().st_size, crc32_of(path))
        for path in files
    ]
    opened: list[str] = []

    def path_for(name: str) -> Path:
        opened.append(name)
        return tmp_path / name

    tracemalloc.start()
    try:
        stream = ZipPlan(entries, utcnow(), path_for).iter_bytes()
        first = next(stream)
        assert first and opened == ["0.exr"], "bytes leave before the next file is read"
        total = len(first) + sum(len(chunk) for chunk in stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 24 * 1024 * 1024
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes: the archive was held in memory"


# ------------------------------------------------- the worker's cache, for real


@pytest.mark.blender
@pytest.mark.slow
def test_a_worker_that_rendered_a_job_downloads_nothing_for_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = make_scene(tmp_path / "scene" / "anim.blend", "animated", frames="1-2", samples=2)
    monkeypatch.setenv("FARMHAND_LOG_JSON", "1")
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        worker = farm.start_worker("w1", "--cache-size", "50M", blender="bpy")
        cache = tmp_path / "farm" / "workers" / "w1" / "cache" / "sha256"
        jobs = []
        for _ in range(2):
            with farm.client() as client:
                job_id = client.submit_blend(blend, JobSettings(frame_start=1, frame_end=2)).id
            job = wait_for(lambda: finished(farm, job_id), 300, f"job {job_id} to finish")
            assert job.status is JobStatus.COMPLETED, job.status_reason
            jobs.append(job_id)
            if len(jobs) == 1:
                inodes = {p: p.stat().st_ino for p in cache.rglob("*") if p.is_file()}
        ready = [
            event
            for line in worker.log_path.read_text().splitlines()
            if line.startswith("{") and (event := json.loads(line)).get("event") == "files ready"
        ]
    by_job = {
        job_id: [e["downloaded_bytes"] for e in ready if e["job_id"] == job_id] for job_id in jobs
    }
    assert sum(by_job[jobs[0]]) == blend.stat().st_size, "the .blend came over once"
    assert by_job[jobs[1]] and sum(by_job[jobs[1]]) == 0, "the second job's files were cached"
    assert inodes and {p: p.stat().st_ino for p in inodes} == inodes, "no blob was rewritten"


# ------------------------------------------------------------------------ the CLI


def test_cli_downloads_and_admin_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`farmhand download --frame/--zip/--inputs/--template` and `farmhand admin usage|gc`
    against a real manager process."""
    cli = CliRunner()
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        monkeypatch.setenv("FARMHAND_URL", farm.url)
        monkeypatch.setenv("FARMHAND_TOKEN", farm.admin_token)
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        with httpx.Client(base_url=farm.url, headers=admin) as http:
            blend = hashlib.sha256(FAKE_BLEND).hexdigest()
            http.put(f"/api/blobs/{blend}", content=FAKE_BLEND).raise_for_status()
            job = http.post(
                "/api/jobs",
                json={"main_file": "scene.blend", "files": {"scene.blend": blend},
                      "frame_end": 2, "chunk_size": 2, "name": "spot"},
            )  # fmt: skip
            job_id = job.json()["id"]
            secret = http.post(
                "/api/runner/register", json={"token": farm.runner_token, "name": "w"}
            ).json()["secret"]
            runner = {"Authorization": f"Bearer {secret}"}
            task = http.get("/api/runner/tasks?wait=0", headers=runner).json()
            frames = {1: png_bytes(colour="red"), 2: png_bytes(colour="blue")}
            for frame, data in frames.items():
                http.post(
                    f"/api/runner/files/{job_id}/upload",
                    headers=runner,
                    data={"task_id": str(task["task_id"]), "frame": str(frame)},
                    files={"file": (f"{frame:04d}.png", data, "image/png")},
                ).raise_for_status()
            http.put(f"/api/blobs/{hashlib.sha256(b'junk').hexdigest()}", content=b"junk")
            # A resumable upload left half done (3 of 10 bytes), and a frame's thumbnail.
            half = b"0123456789"
            opened = http.post(
                "/api/uploads", json={"sha256": hashlib.sha256(half).hexdigest(), "size": 10}
            ).json()["id"]
            http.patch(
                f"/api/uploads/{opened}",
                headers={"Upload-Offset": "0", "Content-Type": "application/octet-stream"},
                content=half[:3],
            ).raise_for_status()
            output = next(f for f in http.get(f"/api/jobs/{job_id}/files").json() if f["frame"])
            http.get(f"/api/jobs/{job_id}/files/{output['id']}/thumbnail").raise_for_status()

        out = tmp_path / "out"
        one = cli.invoke(app, ["download", str(job_id), "--frame", "2", "-o", str(out)])
        assert one.exit_code == 0, one.output
        assert (out / "frames" / "0002.png").read_bytes() == frames[2]
        named = cli.invoke(
            app, ["download", str(job_id), "--template", "{job}/{frame:03d}.{ext}", "-o", str(out)]
        )
        assert named.exit_code == 0, named.output
        assert (out / "spot" / "001.png").read_bytes() == frames[1]
        zipped = cli.invoke(app, ["download", str(job_id), "--zip", "-o", str(out)])
        assert zipped.exit_code == 0, zipped.output
        # Named as the manager names it (STORAGE.md: job-<id>-<the job's name>.zip).
        assert unzip((out / f"job-{job_id}-spot.zip").read_bytes()) == {
            "frames/0001.png": frames[1],
            "frames/0002.png": frames[2],
        }
        inputs = cli.invoke(app, ["download", str(job_id), "--inputs", "-o", str(out)])
        assert inputs.exit_code == 0, inputs.output
        inputs_zip = out / f"job-{job_id}-spot-inputs.zip"
        assert unzip(inputs_zip.read_bytes()) == {"scene.blend": FAKE_BLEND}
        hostile = cli.invoke(app, ["download", str(job_id), "--template", "../{frame}.{ext}"])
        assert hostile.exit_code == 1 and "template" in hostile.output

        usage = cli.invoke(app, ["admin", "usage"])
        assert usage.exit_code == 0, usage.output
        assert "4 blobs" in usage.output and "admin" in usage.output
        assert "4 B unreferenced" in usage.output
        assert "1 unfinished upload, holding 3 B" in usage.output
        assert "thumbnails: " in usage.output and " in 1 file" in usage.output
        admin_row = next(line for line in usage.output.splitlines() if " admin " in line)
        assert "1 (3 B of 10 B)" in admin_row and "no quota (admin)" in admin_row, usage.output
        collected = cli.invoke(app, ["admin", "gc"])
        assert collected.exit_code == 0, collected.output
        assert "removed 0 blobs" in collected.output, "the junk is inside its grace period"


# --------------------------------------------------------------- on PostgreSQL


@pytest.fixture
def pg_farm(tmp_path: Path, postgres_url: str) -> Iterator[Farm]:
    """A farm on its own PostgreSQL database, with the storage settings of `farm`."""
    settings = make_settings(
        tmp_path / "data",
        database_url=fresh_database(postgres_url, f"storage_{tmp_path.name}"),
        blob_retention_days=2.0,
        blob_grace_seconds=60.0,
        gc_interval=0,
    )
    with TestClient(create_app(settings)) as client:
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scenario",
    [
        test_gc_removes_only_unreferenced_blobs_past_their_retention,
        test_a_blob_a_client_was_just_told_about_survives_gc,
        test_deleting_a_job_frees_at_once_what_only_it_used,
        test_usage_per_user_and_of_the_disk_for_admins_only,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
@pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed")
@pytest.mark.xdist_group("postgres")
def test_storage_housekeeping_on_postgres(pg_farm: Farm, scenario: Callable[[Farm], None]) -> None:
    assert pg_farm.client.get("/healthz").json()["database"] == "postgresql"
    scenario(pg_farm)


def test_gc_removes_many_blobs_batch_after_batch(farm: Farm) -> None:
    """40 000 unreferenced blobs, removed 500 hashes per statement (some databases limit
    how many parameters one query may bind): every batch is done, not just the first."""
    old = utcnow() - 10 * DAY
    rows = [
        {"sha256": f"{n:064x}", "size": 1, "created_at": old, "touched_at": None}
        for n in range(40_000)
    ]
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        session.execute(insert(Blob), rows)
    assert gc(farm)["removed"] == 40_000
    assert farm.client.get("/api/admin/usage", headers=farm.admin).json()["blobs"] == 0


def test_a_file_whose_blob_was_recorded_again_meanwhile_is_put_back(farm: Farm) -> None:
    """The last step of a removal: a row deleted, then the same bytes uploaded again
    before the file went. The fresh upload keeps its file; a truly gone blob does not."""
    context = farm.client.app.state.farm  # type: ignore[attr-defined]
    again = put(farm, b"uploaded again just now")
    gone = put(farm, b"really unused")
    with context.db.transaction() as session:
        session.execute(delete(Blob).where(Blob.sha256 == gone))

    freed = remove_blob_files(context, [again, gone])

    assert stored(farm, again), "its row exists: the file is put back"
    assert not stored(farm, gone)
    assert freed == len(b"really unused")
    assert not [p for p in (farm.data_dir / "blobs" / "tmp").iterdir() if p.name.startswith("gc-")]
