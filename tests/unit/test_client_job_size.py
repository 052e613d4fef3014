"""The client refuses a job whose manifest the manager would refuse for its size, before
it hashes or uploads a single file (`farmhand.shared.limits`, one number for both)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest

from farmhand.client import FarmhandClient, FarmhandError, submission
from farmhand.client.client import job_body
from farmhand.client.errors import JobTooLarge
from farmhand.client.packing import PackedProject
from farmhand.shared.limits import JOB_BODY_MAX_BYTES
from farmhand.shared.schemas import JobCreate, JobSettings

FOLDER = "projects/2026/commercial-spring/shot-010_forest-flyover/renders/plates/" + "v" * 250
"""A deep folder: 100,000 files in it make a manifest past the limit."""


def paths(count: int) -> list[str]:
    return [f"{FOLDER}/plate_{n:06d}.png" for n in range(count)]


class Recorder:
    """A fake manager that counts what reached it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(202, json={"id": 1, "status": "queued", "location": "/api/jobs/1"})


def client(recorder: Recorder) -> FarmhandClient:
    return FarmhandClient("http://manager.test", "tok", transport=httpx.MockTransport(recorder))


def test_create_job_refuses_a_manifest_over_the_limit_without_sending_it() -> None:
    files = dict.fromkeys(["shot.blend", *paths(99_999)], "0" * 64)
    job = JobCreate(main_file="shot.blend", files=files)
    assert len(job_body(job)) > JOB_BODY_MAX_BYTES
    recorder = Recorder()
    with client(recorder) as farm, pytest.raises(JobTooLarge) as refused:
        farm.create_job(job)
    assert recorder.requests == [], "nothing was sent"
    message = str(refused.value)
    assert (
        "the job lists 100,000 files" in message and "the manager takes at most 32 MiB" in message
    )
    assert "nothing was uploaded" in message and "--shared" in message
    assert isinstance(refused.value, FarmhandError), "the CLI shows it as any refusal"


def test_create_job_sends_exactly_the_bytes_it_measured() -> None:
    recorder = Recorder()
    job = JobCreate(main_file="shot.blend", files={"shot.blend": "a" * 64, "tex/é.png": "b" * 64})
    with client(recorder) as farm:
        farm.create_job(job)
    (sent,) = recorder.requests
    assert sent.content == job_body(job)
    assert sent.headers["content-type"] == "application/json"
    assert JobCreate.model_validate_json(sent.content) == job


def fake_pack(count: int, tmp_path: Path) -> Callable[..., AbstractContextManager[PackedProject]]:
    """`pack` of a scene using `count` files that are never read (they do not exist: a
    hash or an upload of one would fail the test)."""

    @contextmanager
    def pack(
        blend: Path, project: Path | None = None, frames: object = None
    ) -> Iterator[PackedProject]:
        files = {path: tmp_path / "absent" / path for path in paths(count)}
        files["shot.blend"] = blend
        yield PackedProject("shot.blend", files, [], tmp_path, tmp_path)

    return pack


@pytest.mark.parametrize(
    ("count", "said"),
    [(99_999, "its manifest would be"), (100_000, "a job may have at most 100,000")],
    ids=["too-many-bytes", "too-many-files"],
)
def test_submit_refuses_before_hashing_or_uploading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, said: str
) -> None:
    monkeypatch.setattr(submission, "pack", fake_pack(count, tmp_path))
    recorder = Recorder()
    with client(recorder) as farm, pytest.raises(JobTooLarge) as refused:
        submission.submit_project(farm, tmp_path / "shot.blend", JobSettings())
    assert said in str(refused.value)
    assert f"the job lists {count + 1:,} files" in str(refused.value)
    assert recorder.requests == [], "not even the missing-blobs question was asked"


def test_a_long_sequence_within_the_limit_is_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """14,000 frames of an image sequence: over the old 1 MiB, well within the limit."""
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"BLENDER-v304REND")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0.png").write_bytes(b"frame")

    @contextmanager
    def pack(
        blend_path: Path, project: Path | None = None, job_frames: object = None
    ) -> Iterator[PackedProject]:
        files = {f"{FOLDER[:80]}/plate_{n:06d}.png": frames / "0.png" for n in range(14_000)}
        files["shot.blend"] = blend_path
        yield PackedProject("shot.blend", files, [], tmp_path, tmp_path)

    def manager(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        assert request.url.path == "/api/jobs"
        assert len(request.content) > 1024**2
        return httpx.Response(202, json={"id": 3, "status": "queued", "location": "/api/jobs/3"})

    monkeypatch.setattr(submission, "pack", pack)
    with FarmhandClient("http://m.test", "tok", transport=httpx.MockTransport(manager)) as farm:
        submitted = submission.submit_project(farm, blend, JobSettings())
    assert submitted.job.id == 3 and submitted.files == 14_001
