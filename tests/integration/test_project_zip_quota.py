"""Project zips against the quota and the disk (QA round 7).

A zip of 3000 distinct files of 1 MiB, almost all zeros (3.4 MB sent), passed the zip
bomb check (entries of 1 MiB were under its floor) and was unpacked whole before the
quota was asked: each try answered 413 and left 3 GiB on the disk for the grace period,
counted against its sender. Here, with a quota of a few MiB and the same shape scaled
down: such a zip is refused before a byte is stored, a zip over the quota is too, a
zip lying about its sizes leaves nothing behind, and honest projects still go in.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.context import UNPACKS_AT_ONCE
from farmhand.manager.storage import project_zip
from farmhand.manager.storage.blobs import BlobStore
from farmhand.manager.storage.project_zip import Contents, Project
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings

QUOTA = 8 * 1024**2
MiB = 1024**2


@pytest.fixture
def quota_farm(tmp_path: Path) -> Iterator[Farm]:
    """A farm whose users may hold 8 MiB each."""
    settings = make_settings(tmp_path / "data", user_quota_bytes=QUOTA)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def make_user(farm: Farm, name: str) -> dict[str, str]:
    answer = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def qa_shape(count: int, tag: str) -> bytes:
    """QA's `mkzips.py`: a .blend and `count` distinct files of exactly 1 MiB of zeros."""
    entries = {"scene.blend": FAKE_BLEND}
    for i in range(count):
        head = f"{tag}-{i:08d}".encode()
        entries[f"tex/{i:06d}.bin"] = head + b"\0" * (MiB - len(head))
    return zip_of(entries)


def lying(data: bytes, name: str, declared: int) -> bytes:
    """`data` with entry `name` declaring `declared` bytes unpacked, in its local header
    and in the central directory, where the real content is larger."""
    raw = bytearray(data)
    encoded = name.encode()
    for signature, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),
        (b"PK\x01\x02", 24, 28, 46),
    ):
        start = raw.find(signature)
        while start != -1:
            (length,) = struct.unpack_from("<H", raw, start + name_len_at)
            if bytes(raw[start + name_at : start + name_at + length]) == encoded:
                struct.pack_into("<I", raw, start + size_at, declared)
            start = raw.find(signature, start + 4)
    return bytes(raw)


def upload(farm: Farm, headers: dict[str, str], data: bytes) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        "/api/projects", headers=headers, files={"file": ("project.zip", data, "application/zip")}
    )
    return answer


def store_bytes(farm: Farm) -> int:
    """What the blob store holds on disk, its temporary area included."""
    root = farm.data_dir / "blobs"
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def usage(farm: Farm, name: str) -> int:
    answer = farm.client.get("/api/admin/usage", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    return int(next(user["bytes"] for user in answer.json()["users"] if user["name"] == name))


def test_the_qa_shape_is_refused_before_a_byte_is_stored(quota_farm: Farm) -> None:
    farm = quota_farm
    ann = make_user(farm, "ann")
    assert upload(farm, ann, zip_of({"a.blend": FAKE_BLEND})).status_code == 200
    stored, used = store_bytes(farm), usage(farm, "ann")
    shape = qa_shape(40, "A")  # 40 MiB from about 60 KB
    for sender in (ann, farm.admin):  # admins have no quota: the ratio stops theirs
        answer = upload(farm, sender, shape)
        assert answer.status_code == 400, answer.text
        detail = answer.json()["detail"]
        assert "zip bomb" in detail and "200 times" in detail, detail
        assert store_bytes(farm) == stored, "nothing of it reached the disk"
    assert usage(farm, "ann") == used


def test_a_zip_over_the_quota_is_refused_before_a_byte_is_stored(quota_farm: Farm) -> None:
    farm = quota_farm
    ann = make_user(farm, "ann")
    assert upload(farm, ann, zip_of({"a.blend": FAKE_BLEND})).status_code == 200
    stored, used = store_bytes(farm), usage(farm, "ann")
    big = zip_of({"scene.blend": FAKE_BLEND, "tex/noise.bin": os.urandom(QUOTA + MiB)})
    for _ in range(2):  # sent again while already refused: still nothing stored
        answer = upload(farm, ann, big)
        assert answer.status_code == 413, answer.text
        detail = answer.json()["detail"]
        assert detail.startswith("storage quota exceeded: this would bring your usage to")
        assert "9.0 MiB of your 8.0 MiB quota" in detail, detail
        assert store_bytes(farm) == stored
        assert usage(farm, "ann") == used
    # The admin has no quota: the same zip goes in.
    assert upload(farm, farm.admin, big).status_code == 200


def test_honest_projects_within_the_quota_go_in_and_may_be_sent_again(
    quota_farm: Farm,
) -> None:
    """Five MiB twice would pass an 8 MiB quota if nothing were stored yet; the second
    zip's textures are stored already (a .blend changed and the project sent again), so
    they cost nothing more and the zip is taken."""
    farm = quota_farm
    ann = make_user(farm, "ann")
    texture = os.urandom(5 * MiB)
    first = upload(farm, ann, zip_of({"shot/scene.blend": FAKE_BLEND, "shot/t.bin": texture}))
    assert first.status_code == 200, first.text
    second = zip_of({"shot/scene.blend": FAKE_BLEND + b"changed", "shot/t.bin": texture})
    answer = upload(farm, ann, second)
    assert answer.status_code == 200, answer.text
    assert answer.json()["files"]["shot/t.bin"] == first.json()["files"]["shot/t.bin"]
    assert 5 * MiB < usage(farm, "ann") < 6 * MiB
    job = farm.client.post(
        "/api/jobs",
        headers=ann,
        json={"main_file": "shot/scene.blend", "files": answer.json()["files"], "frame_end": 1},
    )
    assert job.status_code == 202, job.text


def test_a_zip_lying_about_its_sizes_is_refused_and_leaves_nothing_behind(
    quota_farm: Farm,
) -> None:
    """Entries stored before the lying one is met are removed, except those that were
    stored (and recorded) before: nothing already stored is lost."""
    farm = quota_farm
    ann = make_user(farm, "ann")
    kept = os.urandom(MiB)
    first = upload(farm, ann, zip_of({"a.blend": FAKE_BLEND, "kept.bin": kept}))
    assert first.status_code == 200, first.text
    stored, used = store_bytes(farm), usage(farm, "ann")
    honest = {"scene.blend": FAKE_BLEND + b"new", "kept.bin": kept, "new.bin": os.urandom(MiB)}
    data = lying(zip_of({**honest, "z/liar.bin": os.urandom(3 * MiB)}), "z/liar.bin", 1000)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.getinfo("z/liar.bin").file_size == 1000
    answer = upload(farm, ann, data)
    assert answer.status_code == 400, answer.text
    assert "'z/liar.bin'" in answer.json()["detail"]
    assert store_bytes(farm) == stored, "the new files stored before the lie were removed"
    assert usage(farm, "ann") == used
    job = farm.client.post(
        "/api/jobs",
        headers=ann,
        json={"main_file": "a.blend", "files": first.json()["files"], "frame_end": 1},
    )
    assert job.status_code == 202, job.text
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    got = farm.client.get(f"/api/runner/files/{task['job_id']}/kept.bin", headers=runner)
    assert got.content == kept, "a file stored before is still whole"


def held_after_admission(
    monkeypatch: pytest.MonkeyPatch, zips: int
) -> Callable[[Callable[[], None]], None]:
    """Make `zips` project zips meet: each waits, once the quota has answered it and
    before a byte of it is stored, until all have been answered, as big zips sent at
    once do (QA round 8: four of 45 MiB). The function returned sets what to do once
    all are answered, before any is stored. The wait is bounded: a zip that never gets
    there breaks the barrier and fails the test instead of hanging it."""
    hooks: list[Callable[[], None]] = []

    def all_answered() -> None:
        for hook in hooks:
            hook()

    barrier = threading.Barrier(zips, action=all_answered)
    ingest = project_zip.ingest_project

    def meeting(
        blobs: BlobStore,
        source: BinaryIO,
        max_total: int,
        admit: Callable[[int, Contents], object],
        discard: Callable[[list[str]], object],
    ) -> Project:
        def admit_then_meet(total: int, contents: Contents) -> object:
            try:
                return admit(total, contents)
            finally:
                barrier.wait(timeout=60)

        return ingest(blobs, source, max_total, admit=admit_then_meet, discard=discard)

    monkeypatch.setattr("farmhand.manager.api.projects.ingest_project", meeting)
    return hooks.append


def test_zips_sent_at_once_cannot_pass_the_quota_together(
    quota_farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three honest 3 MiB projects at once against 8 MiB: two fit. Each used to pass
    the quota before the others counted; all were stored (9 MiB), then refused by the
    check after unpacking and left on the disk for the grace period."""
    farm = quota_farm
    ann = make_user(farm, "ann")
    stored, used = store_bytes(farm), usage(farm, "ann")
    assert UNPACKS_AT_ONCE == 3  # all three unpack at once: none waits for a turn
    zips = [
        zip_of({"scene.blend": FAKE_BLEND + tag, "tex/t.bin": os.urandom(3 * MiB)})
        for tag in (b"a", b"b", b"c")
    ]
    held_after_admission(monkeypatch, len(zips))
    with ThreadPoolExecutor(len(zips)) as pool:
        answers = list(pool.map(lambda data: upload(farm, ann, data), zips))
    taken = [answer for answer in answers if answer.status_code == 200]
    refused = [answer for answer in answers if answer.status_code != 200]
    assert len(taken) == 2, [answer.text for answer in answers]
    for answer in refused:
        assert answer.status_code == 413, answer.text
        assert answer.json()["detail"].startswith("storage quota exceeded:"), answer.text
    kept = sum(answer.json()["size"] for answer in taken)
    assert usage(farm, "ann") == used + kept
    assert store_bytes(farm) == stored + kept, "nothing of the refused zip stays on disk"
    # What was taken is whole: a job may use it.
    job = farm.client.post(
        "/api/jobs",
        headers=ann,
        json={"main_file": "scene.blend", "files": taken[0].json()["files"], "frame_end": 1},
    )
    assert job.status_code == 202, job.text


def test_a_zip_refused_after_unpacking_leaves_nothing_behind(
    quota_farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What no reservation sees (here a plain upload of the same user while the zip is
    being taken in; in a farm of several manager processes, a zip sent to another) is
    met by the check after unpacking: its 413 used to leave the zip's files on the disk
    for the grace period, counted against the user. They go at once now, while a file
    of the zip stored before stays."""
    farm = quota_farm
    ann = make_user(farm, "ann")
    kept = os.urandom(MiB)
    first = upload(farm, ann, zip_of({"a.blend": FAKE_BLEND, "kept.bin": kept}))
    assert first.status_code == 200, first.text
    stored, used = store_bytes(farm), usage(farm, "ann")
    other = os.urandom(3 * MiB)
    sha = hashlib.sha256(other).hexdigest()

    def upload_beside() -> None:
        answer = farm.client.put(f"/api/blobs/{sha}", headers=ann, content=other)
        assert answer.is_success, answer.text

    held_after_admission(monkeypatch, 1)(upload_beside)
    data = zip_of({"b.blend": FAKE_BLEND + b"b", "kept.bin": kept, "new.bin": os.urandom(4 * MiB)})
    answer = upload(farm, ann, data)
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"].startswith("storage quota exceeded:"), answer.text
    assert usage(farm, "ann") == used + len(other)
    assert store_bytes(farm) == stored + len(other), "the refused zip's new files are gone"
    job = farm.client.post(
        "/api/jobs",
        headers=ann,
        json={"main_file": "a.blend", "files": first.json()["files"], "frame_end": 1},
    )
    assert job.status_code == 202, job.text
