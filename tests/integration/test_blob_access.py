"""A file's SHA-256 is not a key to it: only those who may read a stored blob find it.

Blobs are kept once, whoever uploads them. Bob, who never had Alice's .blend, must not
learn from its hash that it is on the farm, nor name it in a job and download it back
in `inputs.zip`. He may always send the bytes himself (which proves he has them); the
store still keeps one copy. People re-submitting their own files send nothing again.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.client import FarmhandClient, FarmhandError
from farmhand.client.transfer import Uploader, hash_files
from farmhand.localfarm import LocalFarm
from farmhand.manager.api import blendinfo
from farmhand.manager.app import create_app
from farmhand.shared.schemas import JobCreate
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings, stored_blobs


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_user(client: httpx.Client | TestClient, admin: dict[str, str], name: str) -> str:
    answer = client.post("/api/admin/users", headers=admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def job_of(files: dict[str, str]) -> JobCreate:
    return JobCreate(main_file="scene.blend", files=files, frame_start=1, frame_end=1)


def test_knowing_a_hash_does_not_read_someone_elses_file(
    manager: LocalFarm, tmp_path: Path
) -> None:
    """The report's steps, through the CLI's client against a real manager."""
    (tmp_path / "scene.blend").write_bytes(FAKE_BLEND + os.urandom(4096))
    (tmp_path / "wood.png").write_bytes(os.urandom(2048))
    entries = hash_files(
        {"scene.blend": tmp_path / "scene.blend", "tex/wood.png": tmp_path / "wood.png"}
    )
    files = {path: entry.sha256 for path, entry in entries.items()}
    admin = bearer(manager.admin_token)
    with httpx.Client(base_url=manager.url, timeout=30) as api:
        alice_token, bob_token = new_user(api, admin, "alice"), new_user(api, admin, "bob")
    alice_client = FarmhandClient(manager.url, alice_token)
    bob_client = FarmhandClient(manager.url, bob_token)
    with alice_client as alice, bob_client as bob:
        first = Uploader(alice).upload(entries)
        assert first.uploaded_files == 2
        alice.create_job(job_of(files))
        again = Uploader(alice).upload(entries)
        assert (again.uploaded_files, again.bytes_sent) == (0, 0), "her own files go once"
        alice.create_job(job_of(files))

        # Bob has only the hashes: to him they are missing, as a hash nobody uploaded.
        unknown = sha256(b"nobody uploaded this")
        assert bob.missing_blobs([*files.values(), unknown]) == [*files.values(), unknown]
        with pytest.raises(FarmhandError) as stolen:
            bob.create_job(job_of(files))
        with pytest.raises(FarmhandError) as never:
            bob.create_job(job_of({"scene.blend": unknown}))
        assert "2 file(s) were not uploaded first" in str(stolen.value)
        assert "1 file(s) were not uploaded first" in str(never.value), "the same answer"
        assert bob.list_jobs() == []
        resumable = bob.start_upload(files["scene.blend"], entries["scene.blend"].size)
        assert (resumable.complete, resumable.offset) == (False, 0), "no short cut: send it"

        # Sending the bytes proves he has them: then they are his to use, and kept once.
        # (The .blend goes as a resumable upload, the texture in one PUT: both ways.)
        sent = Uploader(bob, resumable_from=4096).upload(entries)
        assert (sent.uploaded_files, sent.bytes_sent) == (2, sum(e.size for e in entries.values()))
        job = bob.create_job(job_of(files))
        with httpx.Client(base_url=manager.url, headers=bearer(bob_token), timeout=30) as api:
            got = api.get(f"/api/jobs/{job.id}/inputs.zip")
        assert got.status_code == 200
        with zipfile.ZipFile(io.BytesIO(got.content)) as archive:
            assert archive.read("scene.blend") == (tmp_path / "scene.blend").read_bytes()
        assert Uploader(bob).upload(entries).uploaded_files == 0
    assert len(stored_blobs(manager)) == 2, "one copy on disk for both"


@pytest.fixture
def quota_farm(tmp_path: Path) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data", user_quota_bytes=6 * 1024)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def test_a_resumable_upload_of_someone_elses_file_must_send_it(quota_farm: Farm) -> None:
    farm = quota_farm
    alice, carol = (new_user(farm.client, farm.admin, name) for name in ("alice", "carol"))
    data = FAKE_BLEND + os.urandom(1000)
    sha = sha256(data)
    assert (
        farm.client.put(f"/api/blobs/{sha}", headers=bearer(alice), content=data).status_code == 201
    )
    mine = farm.client.post(
        "/api/uploads", headers=bearer(alice), json={"sha256": sha, "size": len(data)}
    )
    assert (mine.status_code, mine.json()["complete"]) == (200, True), "her own: nothing to send"

    # Carol's wrong size is not told about Alice's file either: a plain new upload.
    wrong = farm.client.post("/api/uploads", headers=bearer(carol), json={"sha256": sha, "size": 5})
    assert wrong.status_code == 201 and wrong.json()["complete"] is False
    started = farm.client.post(
        "/api/uploads", headers=bearer(carol), json={"sha256": sha, "size": len(data)}
    )
    assert started.status_code == 201 and started.json()["offset"] == 0
    sent = farm.client.patch(
        f"/api/uploads/{started.json()['id']}",
        headers={**bearer(carol), "Upload-Offset": "0", "Content-Type": "application/octet-stream"},
        content=data,
    )
    assert sent.json()["complete"] is True
    job = farm.client.post(
        "/api/jobs",
        headers=bearer(carol),
        json={"main_file": "a.blend", "files": {"a.blend": sha}, "frame_end": 1},
    )
    assert job.status_code == 202, job.text


def test_the_quota_tells_nothing_about_someone_elses_file(quota_farm: Farm) -> None:
    """With a quota, naming a big file of someone else's used to answer 413 with the
    usage it would bring (its size, and that it exists): now the same 400 as a hash
    never uploaded."""
    farm = quota_farm
    alice, bob = (new_user(farm.client, farm.admin, name) for name in ("alice", "bob"))
    big = FAKE_BLEND + os.urandom(4000)
    farm.client.put(f"/api/blobs/{sha256(big)}", headers=bearer(alice), content=big)
    small = FAKE_BLEND + os.urandom(2500)
    farm.client.put(f"/api/blobs/{sha256(small)}", headers=bearer(bob), content=small)
    answer = farm.client.post(
        "/api/jobs",
        headers=bearer(bob),
        json={
            "main_file": "a.blend",
            "files": {"a.blend": sha256(small), "b.blend": sha256(big)},
            "frame_end": 1,
        },
    )
    assert answer.status_code == 400, answer.text
    assert "were not uploaded first" in answer.json()["detail"]
    assert "quota" not in answer.json()["detail"]


def test_files_sent_through_the_web_ui_and_multipart_jobs_are_the_senders(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web UI uploads to /api/blend-info or /api/projects and then submits JSON
    naming the hashes; a multipart job sends its .blend with the job. All are the
    sender's to use again, and another user's missing list still names them."""
    ann, bob = (new_user(farm.client, farm.admin, name) for name in ("ann", "bob"))
    monkeypatch.setattr(blendinfo, "blenders", lambda: [])
    blend = FAKE_BLEND + os.urandom(100)
    read = farm.client.post(
        "/api/blend-info",
        headers=bearer(ann),
        files={"file": ("shot.blend", blend, "application/octet-stream")},
    )
    assert read.status_code == 503  # no Blender here; the file is kept
    sha = read.headers[blendinfo.BLOB_HEADER]

    archive = io.BytesIO()
    texture = os.urandom(300)
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("proj/scene.blend", FAKE_BLEND + os.urandom(100))
        packed.writestr("proj/tex/stone.png", texture)
    project = farm.client.post(
        "/api/projects",
        headers=bearer(ann),
        files={"file": ("proj.zip", archive.getvalue(), "application/zip")},
    )
    assert project.status_code == 200, project.text
    manifest = project.json()["files"]

    for files, main in (
        ({"shot.blend": sha}, "shot.blend"),
        (manifest, project.json()["main_file"]),
    ):
        answer = farm.client.post(
            "/api/jobs",
            headers=bearer(ann),
            json={"main_file": main, "files": files, "frame_end": 1},
        )
        assert answer.status_code == 202, answer.text

    multipart_blend = FAKE_BLEND + os.urandom(100)
    sent = farm.client.post(
        "/api/jobs",
        headers=bearer(ann),
        files={"file": ("m.blend", multipart_blend, "application/octet-stream")},
        data={"settings": "{}"},
    )
    assert sent.status_code == 202, sent.text
    hashes = [sha, *manifest.values(), sha256(multipart_blend)]
    assert farm.client.post(
        "/api/blobs/missing", headers=bearer(ann), json={"hashes": hashes}
    ).json() == {"missing": []}
    assert farm.client.post(
        "/api/blobs/missing", headers=bearer(bob), json={"hashes": hashes}
    ).json() == {"missing": hashes}
    admin_view = farm.client.post("/api/blobs/missing", headers=farm.admin, json={"hashes": hashes})
    assert admin_view.json() == {"missing": []}, "admins see every job, and its files"
