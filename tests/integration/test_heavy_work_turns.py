"""Heavy work on users' files other than reading a .blend takes its turn off the thread
pool every request shares, as reads do (`manager/file_reads.py`): unpacking a project's
zip (`context.unpacks`) and making a thumbnail (`context.thumbnails`).

The heavy part is a gated stand-in here (the zip's unpacking, the EXR's decode): what is
under test is where the manager waits for it, and how often it does it.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from farmhand.manager.api import projects
from farmhand.manager.file_reads import FileReads
from farmhand.manager.storage.project_zip import ingest_project
from farmhand.manager.web import thumbnails
from farmhand.worker.blender.discovery import BlenderNotFound
from tests.integration.conftest import FAKE_BLEND, Farm, stored_blobs, submit_stand_in
from tests.integration.held_work import Held, until
from tests.integration.test_scheduling import manager_of
from tests.integration.test_tiles_protocol import exr_bytes

BURST = 45
"""Requests at once: more than the 40 threads Starlette's pool has."""


def in_threads(calls: list[Callable[[], int]]) -> tuple[list[threading.Thread], list[int]]:
    """Start each call on a thread of its own; what they answer, as they answer."""
    answers: list[int] = []

    def answer(call: Callable[[], int]) -> None:
        answers.append(call())

    threads = [threading.Thread(target=answer, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    return threads, answers


def answered(call: Callable[[], int], within: float = 15.0) -> list[int]:
    """What `call` answered within `within` seconds ([] if it had not)."""
    threads, answers = in_threads([call])
    threads[0].join(timeout=within)
    return answers


def sent_within(send: Callable[[], httpx.Response], within: float = 10.0) -> httpx.Response:
    """What `send` answered, which must be within `within` seconds (a request held
    instead fails the test, not hangs it: its thread ends when the gates open)."""
    got: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: got.append(send()), daemon=True)
    thread.start()
    thread.join(timeout=within)
    assert got, f"not answered within {within:g} s"
    return got[0]


def heartbeat(farm: Farm, runner: dict[str, str]) -> Callable[[], int]:
    def beat() -> int:
        answer = farm.client.post("/api/runner/heartbeat", headers=runner, json={})
        return int(answer.status_code)

    return beat


# Projects ---------------------------------------------------------------------------


def project_zip(index: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("shot/scene.blend", FAKE_BLEND + f"project {index}".encode())
        archive.writestr("shot/textures/a.txt", f"texture {index}")
    return buffer.getvalue()


def upload_project(farm: Farm, index: int) -> Callable[[], int]:
    def send() -> int:
        answer = farm.client.post(
            "/api/projects",
            headers=farm.admin,
            files={"file": (f"p{index}.zip", project_zip(index), "application/zip")},
        )
        return int(answer.status_code)

    return send


def no_blender(*args: object) -> tuple[str, dict[str, Any]]:
    raise BlenderNotFound("no Blender in this test")


@pytest.fixture
def held_unpacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    held = Held(ingest_project)
    monkeypatch.setattr(projects, "ingest_project", held)
    monkeypatch.setattr(projects, "read_scene", no_blender)  # Blender's read: not tested
    yield held
    held.release()


def test_a_burst_of_project_uploads_leaves_the_runners_answered(
    farm: Farm, held_unpacks: Held
) -> None:
    """45 project zips whose unpacking is held: a few unpack at once, each on a thread,
    and the rest wait without one, so a runner's heartbeat is answered meanwhile. They
    used to unpack on the pool's 40 threads, all at once, and the heartbeat waited."""
    runner = farm.register_runner()
    unpacks = manager_of(farm).unpacks
    uploads, answers = in_threads([upload_project(farm, i) for i in range(BURST)])
    try:
        until(lambda: held_unpacks.began + unpacks.waiting >= 40, "the burst reached unpacking")
        assert answered(heartbeat(farm, runner)) == [200], "answered while the unpacks are held"
        assert held_unpacks.began == unpacks.at_once, "a few at a time; the others wait"
        assert answers == [], "all of them still held"
    finally:  # failed or not, let every request end before the app shuts down
        held_unpacks.release()
        for thread in uploads:
            thread.join(timeout=60)
    assert answers == [200] * BURST, "each project, once unpacked, is answered"
    assert held_unpacks.most_at_once <= unpacks.at_once


def test_an_unpack_that_waits_too_long_is_503_and_nothing_is_stored(
    farm: Farm, held_unpacks: Held
) -> None:
    """With every turn taken for longer than an unpack may wait, the upload is told to
    come back (503, Retry-After) before a file of it is stored."""
    context = manager_of(farm)
    context.unpacks = FileReads(at_once=1, wait=0.5, doing="unpacking other projects")
    first, first_answers = in_threads([upload_project(farm, 1)])
    try:
        until(lambda: held_unpacks.began == 1, "the first unpack began")
        before = set(stored_blobs(farm))
        second = sent_within(
            lambda: farm.client.post(
                "/api/projects",
                headers=farm.admin,
                files={"file": ("p2.zip", project_zip(2), "application/zip")},
            )
        )
        assert second.status_code == 503, second.text
        assert "busy unpacking other projects" in second.json()["detail"]
        assert second.headers["Retry-After"].isdigit()
        assert set(stored_blobs(farm)) == before, "nothing of the refused zip is stored"
        assert held_unpacks.began == 1, "the refused one was never unpacked"
    finally:
        held_unpacks.release()
        first[0].join(timeout=30)
    assert first_answers == [200]


# Thumbnails -------------------------------------------------------------------------


def exr_frame(farm: Farm) -> str:
    """The thumbnail URL of a job's one output frame, a small EXR (the stand-in decode
    does not read it)."""
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    runner = farm.register_runner("exr-maker")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    stored = farm.client.post(
        f"/api/runner/files/{job_id}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("frame_0001.exr", exr_bytes(), "image/x-exr")},
    )
    assert stored.status_code == 201, stored.text
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    (output,) = [f for f in files if f["kind"] == "output"]
    return f"/api/jobs/{job_id}/files/{output['id']}/thumbnail"


def get_thumbnail(farm: Farm, url: str, size: int) -> Callable[[], int]:
    def get() -> int:
        answer = farm.client.get(url, params={"size": size}, headers=farm.admin)
        if answer.status_code == 200:
            assert answer.headers["content-type"] == "image/jpeg"
        return int(answer.status_code)

    return get


@pytest.fixture
def held_decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    """The EXR's decode, held; it makes a grey picture of the size asked for."""
    held = Held(lambda source, size: Image.new("RGB", (size, size * 3 // 4), (128, 128, 128)))
    monkeypatch.setattr(thumbnails, "exr_preview", held)
    yield held
    held.release()


def test_requests_for_a_new_thumbnail_decode_the_frame_once_two_frames_at_a_time(
    farm: Farm, held_decodes: Held
) -> None:
    """Eight requests at once for one frame's first thumbnail, and one each for four other
    sizes of it: two decodes run at a time, and each thumbnail is decoded once (the
    eight used to decode it eight times at once, 1.4 GiB each for an 8K EXR)."""
    url = exr_frame(farm)
    turns = manager_of(farm).thumbnails
    calls = [get_thumbnail(farm, url, 256) for _ in range(8)]
    calls += [get_thumbnail(farm, url, size) for size in (64, 128, 512, 1600)]
    requests, answers = in_threads(calls)
    try:
        until(lambda: held_decodes.began >= turns.at_once, "decodes began")
        time.sleep(0.5)  # room for any decode beyond the turns to begin
        assert held_decodes.began == turns.at_once == 2, "two decodes at a time"
        assert answers == []
    finally:
        held_decodes.release()
        for thread in requests:
            thread.join(timeout=60)
    assert answers == [200] * len(calls)
    assert held_decodes.began == 5, "one decode per thumbnail, not per request"
    assert held_decodes.most_at_once <= 2


def test_a_cached_thumbnail_is_served_while_every_turn_is_held(
    farm: Farm, held_decodes: Held
) -> None:
    """With 45 requests for thumbnails not made yet held (more than the pool's threads),
    one already cached is served, and a runner's heartbeat answered: those waiting to be
    made hold no thread, and a cached one waits for no turn."""
    url = exr_frame(farm)
    runner = farm.register_runner()
    context = manager_of(farm)
    held_decodes.release()
    assert answered(get_thumbnail(farm, url, 256)) == [200], "made and cached"
    assert held_decodes.began == 1
    assert any((farm.data_dir / "thumbnails").rglob("*-256.jpg")), "in the cache"
    held_decodes.gate.clear()

    sizes = (64, 128, 512, 1600, 2048)
    waiting, answers = in_threads([get_thumbnail(farm, url, sizes[i % 5]) for i in range(BURST)])
    try:
        until(lambda: held_decodes.began > context.thumbnails.at_once, "decodes held")
        time.sleep(0.5)  # the rest of the burst reaches the manager
        assert answered(get_thumbnail(farm, url, 256)) == [200], "the cached one is served"
        assert answered(heartbeat(farm, runner)) == [200], "and the runners are answered"
        assert answers == []
    finally:
        held_decodes.release()
        for thread in waiting:
            thread.join(timeout=60)
    assert answers == [200] * BURST
    assert held_decodes.began == 1 + len(sizes), "each size decoded once"


def test_a_thumbnail_that_waits_too_long_is_503(farm: Farm, held_decodes: Held) -> None:
    """With every turn taken for longer than making a thumbnail may wait, the request is
    told to come back (503, Retry-After), whether it waited for a turn or for the same
    thumbnail another request is making."""
    url = exr_frame(farm)
    context = manager_of(farm)
    context.thumbnails = FileReads(at_once=1, wait=0.5, doing="making other thumbnails")
    first, first_answers = in_threads([get_thumbnail(farm, url, 256)])
    try:
        until(lambda: held_decodes.began == 1, "the first decode began")
        for size in (256, 512):
            refused = sent_within(
                lambda: farm.client.get(url, params={"size": size}, headers=farm.admin)
            )
            assert refused.status_code == 503, refused.text
            assert "busy making other thumbnails" in refused.json()["detail"]
            assert refused.headers["Retry-After"].isdigit()
        assert held_decodes.began == 1
    finally:
        held_decodes.release()
        first[0].join(timeout=30)
    assert first_answers == [200]
