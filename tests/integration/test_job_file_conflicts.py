"""Job files whose paths cannot all exist on a worker's disk are refused when they come in.

Before, such a job was accepted (`202`) and every attempt of every task then failed on
the workers ("Is a directory"), or, on Windows and macOS workers, one file silently
replaced the other. A manifest, a file added later and a project zip (see
`test_project_zip_methods.py`) are checked by the same rule.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.integration.conftest import (
    FAKE_BLEND,
    Farm,
    inputs,
    png_bytes,
    submit_stand_in,
    upload_input,
)


def put(farm: Farm, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    answer = farm.client.put(f"/api/blobs/{sha}", content=data, headers=farm.admin)
    assert answer.status_code in (200, 201), answer.text
    return sha


def post_manifest(farm: Farm, main_file: str, files: dict[str, str]) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"main_file": main_file, "files": files, "frame_end": 1},
    )
    return answer


def job_count(farm: Farm) -> int:
    return len(farm.client.get("/api/jobs", headers=farm.admin).json())


@pytest.mark.parametrize(
    ("main_file", "paths", "said"),
    [
        ("a/tiny.blend", ["a/tiny.blend", "a"], "a file and a folder"),
        ("tiny.blend", ["tiny.blend", "tiny.blend/evil.png"], "a file and a folder"),
        ("s.blend", ["s.blend", "S.blend"], "differ only in case"),
        ("shot/s.blend", ["shot/s.blend", "Shot/tex/wood.png", "SHOT/tex/Wood.png"], "case"),
    ],
)
def test_a_manifest_whose_paths_collide_is_a_400_naming_both(
    farm: Farm, main_file: str, paths: list[str], said: str
) -> None:
    blend, texture = put(farm, FAKE_BLEND), put(farm, png_bytes())
    files = {path: blend if path.endswith(".blend") else texture for path in paths}
    answer = post_manifest(farm, main_file, files)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert said in detail, detail
    assert sum(repr(path) in detail for path in paths) == 2, detail
    assert job_count(farm) == 0, "no job was created"


def test_a_manifest_whose_paths_fit_together_is_accepted(farm: Farm) -> None:
    blend, texture = put(farm, FAKE_BLEND), put(farm, png_bytes())
    answer = post_manifest(
        farm, "a/tiny.blend", {"a/tiny.blend": blend, "a/tiny.png": texture, "ab": texture}
    )
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize(
    ("path", "other", "said"),
    [
        ("scene.blend/evil.png", "scene.blend", "a file and a folder"),
        ("Scene.blend", "scene.blend", "differ only in case"),
        ("tex", "tex/wood.png", "a file and a folder"),
        ("TEX/WOOD.png", "tex/wood.png", "differ only in case"),
    ],
)
def test_an_added_file_that_collides_with_the_jobs_files_is_a_400(
    farm: Farm, path: str, other: str, said: str
) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    assert upload_input(farm, job_id, "tex/wood.png", png_bytes()).status_code == 201
    before = inputs(farm, job_id)

    answer = upload_input(farm, job_id, path, png_bytes(2, 2))
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert repr(path) in detail and repr(other) in detail and said in detail, detail
    assert inputs(farm, job_id) == before, "the job's files are as they were"


def test_replacing_a_file_at_its_own_path_is_no_conflict(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    assert upload_input(farm, job_id, "tex/wood.png", png_bytes()).status_code == 201
    replacement = png_bytes(3, 3, "green")
    answer = upload_input(farm, job_id, "tex/wood.png", replacement)
    assert answer.status_code == 201, answer.text
    assert inputs(farm, job_id)["tex/wood.png"] == hashlib.sha256(replacement).hexdigest()
