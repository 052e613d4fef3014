"""Hostile and mistaken input: always a clear 4xx, never a 500, nothing stored lost."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.integration.conftest import FAKE_BLEND, Farm


def post_blend(
    farm: Farm, settings: object, name: str = "scene.blend", content: bytes = FAKE_BLEND
) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        files={"file": (name, content, "application/octet-stream")},
        data={"settings": settings if isinstance(settings, str) else json.dumps(settings)},
    )
    return answer


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"frame_start": 10, "frame_end": 1}, "before frame_start"),
        ({"frame_start": -5_000_000, "frame_end": 1}, "frame_start"),
        ({"frame_start": 1, "frame_end": 99_999_999}, "frame_end"),
        ({"frame_start": -1_000_000, "frame_end": 1_000_000}, "frames is more than"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"priority": 101}, "priority"),
        ({"frame_start": "1; touch /tmp/x"}, "frame_start"),
        ({"output_format": "GIF"}, "output_format"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ("{not json", "invalid settings"),
        ("[1, 2]", "invalid settings"),
    ],
)
def test_bad_settings_are_refused(farm: Farm, settings: object, fragment: str) -> None:
    answer = post_blend(farm, settings)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["detail"]


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.blend", "/abs/scene.blend", "C:\\x\\scene.blend", "a/../b.blend"]
)
def test_path_traversal_in_file_names_never_escapes(farm: Farm, name: str) -> None:
    answer = post_blend(farm, {}, name=name)
    if answer.status_code == 202:
        # The multipart parser may have cut a Windows path down to its last part itself;
        # what matters is that the stored name has no folder in it.
        job = farm.client.get(answer.headers["Location"], headers=farm.admin).json()
        assert job["main_file"] == "scene.blend"
    else:
        assert answer.status_code == 400, answer.text


def test_non_blend_upload_is_refused(farm: Farm) -> None:
    assert post_blend(farm, {}, name="notes.txt").status_code == 400
    answer = post_blend(farm, {}, name="fake.blend", content=b"<html>not a blend</html>")
    assert answer.status_code == 400
    assert "not a .blend" in answer.json()["detail"]


def test_bad_json_body(farm: Farm) -> None:
    answer = farm.client.post(
        "/api/jobs", headers={**farm.admin, "Content-Type": "application/json"}, content=b"{oops"
    )
    assert answer.status_code == 400
    answer = farm.client.post(
        "/api/jobs", headers={**farm.admin, "Content-Type": "text/plain"}, content=b"hello"
    )
    assert answer.status_code == 415


def test_manifest_paths_and_missing_blobs(farm: Farm) -> None:
    sha = hashlib.sha256(FAKE_BLEND).hexdigest()
    stored = farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=FAKE_BLEND)
    assert stored.status_code == 201
    again = farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=FAKE_BLEND)
    assert again.status_code == 200
    for files, main in [
        ({"../../etc/passwd": sha}, "../../etc/passwd"),
        ({"/etc/scene.blend": sha}, "/etc/scene.blend"),
        ({"C:/scene.blend": sha}, "C:/scene.blend"),
        ({"scene.blend": sha}, "other.blend"),
        ({"scene.blend": "0" * 64}, "scene.blend"),
    ]:
        answer = farm.client.post(
            "/api/jobs", headers=farm.admin, json={"main_file": main, "files": files}
        )
        assert answer.status_code == 400, (files, answer.text)
    ok = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"main_file": "scene.blend", "files": {"scene.blend": sha}},
    )
    assert ok.status_code == 202


def test_corrupted_blob_upload_is_refused_and_not_stored(farm: Farm) -> None:
    sha = hashlib.sha256(b"the real content").hexdigest()
    answer = farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=b"tampered content")
    assert answer.status_code == 400
    missing = farm.client.post("/api/blobs/missing", headers=farm.admin, json={"hashes": [sha]})
    assert missing.json()["missing"] == [sha]
    assert not list((farm.data_dir / "blobs" / "tmp").iterdir()), "no half-written file is left"


def test_unknown_ids_and_wrong_tokens(farm: Farm) -> None:
    assert farm.client.get("/api/jobs/9999", headers=farm.admin).status_code == 404
    assert farm.client.get("/api/jobs/abc", headers=farm.admin).status_code == 400
    assert farm.client.get("/api/jobs").status_code == 401
    wrong = {"Authorization": "Bearer fh_api_wrong"}
    assert farm.client.get("/api/jobs", headers=wrong).status_code == 401
    assert farm.client.get("/api/admin/runners", headers=wrong).status_code == 401
    bad_register = farm.client.post("/api/runner/register", json={"token": "nope", "name": "w"})
    assert bad_register.status_code == 401
    runner = farm.register_runner()
    assert farm.client.get("/api/jobs", headers=runner).status_code == 401, (
        "a runner secret is not an API token"
    )
    assert farm.client.get("/api/runner/tasks?wait=0", headers=farm.admin).status_code == 401


def test_runner_cannot_read_files_of_jobs_it_does_not_hold(farm: Farm) -> None:
    job = post_blend(farm, {}).json()["id"]
    runner = farm.register_runner()
    answer = farm.client.get(f"/api/runner/files/{job}/scene.blend", headers=runner)
    assert answer.status_code == 404
    answer = farm.client.get(f"/api/runner/files/{job}/..%2F..%2Fetc%2Fpasswd", headers=runner)
    assert answer.status_code in (400, 404)


def test_nothing_stored_is_lost_after_bad_requests(farm: Farm) -> None:
    good = post_blend(farm, {"frame_start": 1, "frame_end": 3}).json()["id"]
    for bad in ({"frame_start": 5, "frame_end": 1}, "{", {"chunk_size": -1}):
        post_blend(farm, bad)
    jobs = farm.client.get("/api/jobs", headers=farm.admin).json()
    assert [job["id"] for job in jobs] == [good]
    assert jobs[0]["frames_total"] == 3
