"""Job settings are typed as sent: integers are JSON integers, names one line of text.

Lax parsing took `frame_end: true` as frame 1 and `"3"` as 3, and a name could carry NUL
(which PostgreSQL cannot store) or terminal escapes; each is now a 400 naming the field,
by both ways of submitting (a JSON manifest, a multipart upload's `settings`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from farmhand.manager.db.models import Job
from tests.integration.conftest import Farm, post_stand_in, submit_stand_in


def post_manifest(farm: Farm, **settings: Any) -> httpx.Response:
    """A JSON `JobCreate` of the stand-in .blend, uploaded as a blob first."""
    first = post_stand_in(farm.client, farm.admin)
    assert first.status_code == 202, first.text
    job = farm.client.get(first.headers["Location"], headers=farm.admin).json()
    files = farm.client.get(f"/api/jobs/{job['id']}/files", headers=farm.admin).json()
    blend = next(f for f in files if f["kind"] == "input")
    answer: httpx.Response = farm.client.post(
        "/api/jobs",
        headers={**farm.admin, "Content-Type": "application/json"},
        content=json.dumps(
            {"main_file": "scene.blend", "files": {"scene.blend": blend["sha256"]}, **settings}
        ),
    )
    return answer


BAD = [
    ({"frame_end": True}, "frame_end"),
    ({"frame_end": "3"}, "frame_end"),
    ({"frame_start": 1.0}, "frame_start"),
    ({"chunk_size": True}, "chunk_size"),
    ({"priority": "50"}, "priority"),
    ({"samples": False}, "samples"),
    ({"max_workers": "2"}, "max_workers"),
    ({"video": {"fps": True}}, "video.fps"),
    ({"video": {"crf": "20"}}, "video.crf"),
    ({"tiles": {"columns": "2", "rows": 1}}, "tiles.columns"),
    ({"name": "shot\x00010"}, "name"),
    ({"name": "shot\n010"}, "name"),
    ({"name": "shot\t010"}, "name"),
    ({"name": "\x1b[2Jshot"}, "name"),
    ({"name": "shot\x7f"}, "name"),
    ({"name": "shot\x9b1m"}, "name"),
]


@pytest.mark.parametrize(("settings", "field"), BAD)
def test_a_multipart_submission_with_lax_settings_is_400_naming_the_field(
    farm: Farm, settings: dict[str, Any], field: str
) -> None:
    answer = post_stand_in(farm.client, farm.admin, **settings)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith(f"invalid settings: {field}: ")
    assert farm.client.get("/api/jobs", headers=farm.admin).json() == [], "no job was made"


@pytest.mark.parametrize(("settings", "field"), BAD)
def test_a_json_submission_with_lax_settings_is_400_naming_the_field(
    farm: Farm, settings: dict[str, Any], field: str
) -> None:
    answer = post_manifest(farm, **settings)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith(f"invalid job: {field}: ")
    assert len(farm.client.get("/api/jobs", headers=farm.admin).json()) == 1, "only the upload"


def test_control_characters_are_named_in_the_refusal(farm: Farm) -> None:
    answer = post_stand_in(farm.client, farm.admin, name="a\x00b")
    assert "control character U+0000" in answer.json()["detail"]


def test_a_priority_change_must_be_an_integer(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin)
    for bad in (True, "90", 90.0):
        answer = farm.client.patch(
            f"/api/jobs/{job_id}", headers=farm.admin, json={"priority": bad}
        )
        assert answer.status_code == 400, answer.text
        assert "priority" in answer.json()["detail"]
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert job["priority"] == 50


def test_ordinary_settings_and_unicode_names_are_still_taken(farm: Farm) -> None:
    job_id = submit_stand_in(
        farm.client,
        farm.admin,
        name="Shot 010 · café ★",
        frame_start=-2,
        frame_end=3,
        video={"fps": 29.97, "crf": 20},
    )
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert job["name"] == "Shot 010 · café ★"
    assert (job["settings"]["frame_start"], job["settings"]["frame_end"]) == (-2, 3)
    assert job["settings"]["video"]["fps"] == 29.97


def test_a_job_stored_before_the_rule_still_opens_and_is_claimed(farm: Farm) -> None:
    """Nothing stored is lost: a name with control characters in a job's stored settings
    (submitted before names were checked) is read back, not refused with a 500."""
    job_id = submit_stand_in(farm.client, farm.admin, name="old")
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        job.settings = {**job.settings, "name": "old\x01job\ttabbed"}
    answer = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["settings"]["name"] == "old job tabbed"
    runner = farm.register_runner()
    claimed = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["job_id"] == job_id
