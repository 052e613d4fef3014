"""A rendered frame's way in: `PUT /api/runner/tasks/{task}/frames/{frame}.{ext}` (the raw
body, what workers send) and the multipart `POST /api/runner/files/{job}/upload` that
workers before it send. Hostile names, bodies and callers get a 4xx and store nothing;
the last verified upload of a frame wins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings, png_bytes, submit_stand_in


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """Uploads up to 64 KiB: a frame larger than that is refused with a 413."""
    settings = make_settings(tmp_path / "data", max_upload_bytes=64 * 1024)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def held_task(farm: Farm, first: int = 1, last: int = 2) -> tuple[dict[str, str], Any]:
    """A job of two-frame chunks, and a runner holding its first task."""
    submit_stand_in(farm.client, farm.admin, frame_start=first, frame_end=last, chunk_size=2)
    headers = farm.register_runner("w1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=headers).json()
    return headers, task


def put_frame(farm: Farm, runner: dict[str, str], task_id: int, name: str, body: bytes) -> Any:
    return farm.client.put(
        f"/api/runner/tasks/{task_id}/frames/{name}", headers=runner, content=body
    )


def outputs(farm: Farm, job_id: int) -> list[dict[str, Any]]:
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    return [f for f in files if f["kind"] == "output"]


def stored_blobs(farm: Farm) -> set[str]:
    root = farm.data_dir / "blobs" / "sha256"
    return {p.parent.name + p.name for p in root.glob("*/*")}


def test_a_frame_put_as_the_raw_body_completes_its_task(farm: Farm) -> None:
    runner, task = held_task(farm)
    for frame in task["frames"]:
        answer = put_frame(farm, runner, task["task_id"], f"{frame}.PNG", png_bytes(colour="blue"))
        assert answer.status_code == 201, answer.text
        assert answer.json()["frame"] == frame

    done = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=runner,
        json={"frames": task["frames"]},
    )
    assert done.status_code == 200, done.text
    assert [f["path"] for f in outputs(farm, task["job_id"])] == [
        "frames/0001.png",
        "frames/0002.png",
    ]
    got = farm.client.get(f"/api/jobs/{task['job_id']}/outputs/1", headers=farm.admin)
    assert got.content == png_bytes(colour="blue")


def test_a_negative_frame_is_stored_under_its_own_name(farm: Farm) -> None:
    runner, task = held_task(farm, -3, -2)
    assert task["frames"] == [-3, -2]
    answer = put_frame(farm, runner, task["task_id"], "-3.png", png_bytes())
    assert answer.status_code == 201, answer.text
    assert [f["path"] for f in outputs(farm, task["job_id"])] == ["frames/m0003.png"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("1", "not a frame file name"),
        ("one.png", "not a frame file name"),
        ("1.png.exe", "not a frame file name"),
        ("1.", "not a frame file name"),
        ("12345678901.png", "not a frame file name"),
        ("1.txt", "must be one of"),
        ("1.blend", "must be one of"),
        ("..%2F1.png", "not a frame file name"),
    ],
)
def test_a_bad_file_name_is_a_400_and_stores_nothing(farm: Farm, name: str, says: str) -> None:
    runner, task = held_task(farm)
    before = stored_blobs(farm)
    answer = put_frame(farm, runner, task["task_id"], name, png_bytes())
    assert answer.status_code in (400, 404), answer.text
    if answer.status_code == 400:
        assert says in answer.json()["detail"]
    assert stored_blobs(farm) == before
    assert outputs(farm, task["job_id"]) == []


def test_bytes_that_are_not_an_image_are_refused_and_never_stored(farm: Farm) -> None:
    runner, task = held_task(farm)
    before = stored_blobs(farm)
    truncated = png_bytes(64, 48)[:-30]
    for body in (b"", b"not a png at all", truncated):
        answer = put_frame(farm, runner, task["task_id"], "1.png", body)
        assert answer.status_code == 400, answer.text
        assert "not a readable image" in answer.json()["detail"]
    assert stored_blobs(farm) == before, "a refused frame leaves no file in the store"
    assert list((farm.data_dir / "blobs" / "tmp").iterdir()) == []
    assert outputs(farm, task["job_id"]) == []


def test_a_frame_over_the_upload_limit_is_a_413(farm: Farm) -> None:
    runner, task = held_task(farm)
    huge = png_bytes() + b"\x00" * (65 * 1024)
    answer = put_frame(farm, runner, task["task_id"], "1.png", huge)
    assert answer.status_code == 413, answer.text
    assert outputs(farm, task["job_id"]) == []


def test_only_the_holder_may_put_and_only_its_own_frames(farm: Farm) -> None:
    runner, task = held_task(farm)
    other = farm.register_runner("w2")

    late = put_frame(farm, other, task["task_id"], "1.png", png_bytes())
    assert late.status_code == 409, late.text
    foreign = put_frame(farm, runner, task["task_id"], "7.png", png_bytes())
    assert foreign.status_code == 400, foreign.text
    assert "not part of task" in foreign.json()["detail"]
    nobody = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/frames/1.png", content=png_bytes()
    )
    assert nobody.status_code == 401
    person = put_frame(farm, farm.admin, task["task_id"], "1.png", png_bytes())
    assert person.status_code == 401, "a person's token is not a runner's secret"
    assert outputs(farm, task["job_id"]) == []


def test_the_last_verified_upload_of_a_frame_wins(farm: Farm) -> None:
    runner, task = held_task(farm)
    first = put_frame(farm, runner, task["task_id"], "1.png", png_bytes(colour="red"))
    second = put_frame(farm, runner, task["task_id"], "1.PNG", png_bytes(colour="green"))
    assert first.status_code == second.status_code == 201
    broken = put_frame(farm, runner, task["task_id"], "1.png", b"\x89PNG\r\n\x1a\n broken")
    assert broken.status_code == 400

    (only,) = outputs(farm, task["job_id"])
    assert only["sha256"] == second.json()["sha256"]
    got = farm.client.get(f"/api/jobs/{task['job_id']}/outputs/1", headers=farm.admin)
    assert got.content == png_bytes(colour="green")


def test_the_multipart_form_of_older_workers_still_stores_a_frame(farm: Farm) -> None:
    runner, task = held_task(farm)
    answer = farm.client.post(
        f"/api/runner/files/{task['job_id']}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "2"},
        files={"file": ("0002.png", png_bytes(colour="blue"), "image/png")},
    )
    assert answer.status_code == 201, answer.text
    assert [f["path"] for f in outputs(farm, task["job_id"])] == ["frames/0002.png"]
    wrong_job = farm.client.post(
        f"/api/runner/files/{task['job_id'] + 1}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("0001.png", png_bytes(), "image/png")},
    )
    assert wrong_job.status_code == 400, wrong_job.text
    not_image = farm.client.post(
        f"/api/runner/files/{task['job_id']}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("0001.png", b"nope", "image/png")},
    )
    assert not_image.status_code == 400, not_image.text


@pytest.mark.parametrize("name", ["1.exr", "1.jpg", "1.tif"])
def test_an_image_named_as_another_format_is_refused(farm: Farm, name: str) -> None:
    """A PNG stored as `0001.exr` would be downloaded, thumbnailed and merged as an EXR."""
    runner, task = held_task(farm)
    answer = put_frame(farm, runner, task["task_id"], name, png_bytes())
    assert answer.status_code == 400, answer.text
    assert f"it is a PNG image, not {name[1:]}" in answer.json()["detail"]
    assert outputs(farm, task["job_id"]) == []
