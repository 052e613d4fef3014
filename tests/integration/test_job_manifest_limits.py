"""A job's manifest may list as many files as `JobCreate` allows (100,000), and the body
limit of `POST /api/jobs` has room for them (`farmhand.shared.limits`).

Before, every JSON body was capped at 1 MiB: a job of about 12,000 files (a long image
sequence) was packed, hashed and uploaded, and then refused with 413.
"""

from __future__ import annotations

import hashlib
import json

from farmhand.shared.limits import JOB_BODY_MAX_BYTES
from tests.integration.conftest import FAKE_BLEND, Farm, png_bytes

FOLDER = "projects/2026/commercial-spring/shot-010_forest-flyover/renders/plates/v003/"
"""A realistic deep folder (90 characters): the paths below are about 110 long."""


def put(farm: Farm, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    answer = farm.client.put(f"/api/blobs/{sha}", content=data, headers=farm.admin)
    assert answer.status_code in (200, 201), answer.text
    return sha


def manifest(blend: str, frame: str, count: int) -> dict[str, str]:
    files = {f"{FOLDER}plate_{n:06d}.png": frame for n in range(count)}
    files["shot.blend"] = blend
    return files


def test_a_job_of_100000_files_is_accepted(farm: Farm) -> None:
    blend, frame = put(farm, FAKE_BLEND), put(farm, png_bytes())
    body = json.dumps(
        {"main_file": "shot.blend", "files": manifest(blend, frame, 99_999), "frame_end": 1}
    ).encode()
    assert 1024**2 * 10 < len(body) < JOB_BODY_MAX_BYTES, "far over the old 1 MiB limit"
    answer = farm.client.post(
        "/api/jobs", headers={**farm.admin, "Content-Type": "application/json"}, content=body
    )
    assert answer.status_code == 202, answer.text[:500]
    files = farm.client.get(f"/api/jobs/{answer.json()['id']}/files", headers=farm.admin)
    assert len(files.json()) == 100_000


def test_a_manifest_over_the_limit_is_a_413_naming_it(farm: Farm) -> None:
    too_big = b'{"main_file": "a.blend", "files": {"' + b"x" * JOB_BODY_MAX_BYTES + b'": ""}}'
    answer = farm.client.post(
        "/api/jobs", headers={**farm.admin, "Content-Type": "application/json"}, content=too_big
    )
    assert answer.status_code == 413, answer.text[:500]
    assert "the job's manifest is larger than this manager's limit" in answer.json()["detail"]
    assert "32.0 MiB" in answer.json()["detail"]


def test_other_json_bodies_keep_the_small_limit(farm: Farm) -> None:
    answer = farm.client.post("/api/tokens", headers=farm.admin, json={"name": "x" * (2 * 1024**2)})
    assert answer.status_code == 413, answer.text[:500]
    assert "the request body is larger" in answer.json()["detail"]


def test_the_missing_blobs_question_takes_as_many_hashes_as_it_declares(farm: Farm) -> None:
    """`BlobsMissingRequest` takes 100,000 hashes: 6.7 MB of JSON."""
    hashes = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(100_000)]
    answer = farm.client.post("/api/blobs/missing", headers=farm.admin, json={"hashes": hashes})
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.json()["missing"]) == 100_000
