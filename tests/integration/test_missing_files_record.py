"""A job keeps the files it was submitted without, and the manager takes that list as
any other input from outside: bounded, one line of text each, a 400 otherwise.

The CLI's own submits (`--allow-missing`, real Blender scenes) are in
test_missing_scene_files.py; these post the JSON a client sends.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from farmhand.cli.jobs_cmd import missing_line
from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import Job, User
from farmhand.manager.jobs.views import job_detail
from farmhand.shared.schemas import MAX_MISSING_LISTED, JobCreate, JobDetail, missing_fields
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings
from tests.integration.postgres import fresh_database
from tests.old_schema import insert_old

SHA = hashlib.sha256(FAKE_BLEND).hexdigest()


def post_job(farm: Farm, **fields: Any) -> httpx.Response:
    stored = farm.client.put(f"/api/blobs/{SHA}", headers=farm.admin, content=FAKE_BLEND)
    assert stored.status_code in (200, 201), stored.text
    body = {"main_file": "shots/scene.blend", "files": {"shots/scene.blend": SHA}, **fields}
    answer: httpx.Response = farm.client.post("/api/jobs", headers=farm.admin, json=body)
    return answer


def test_the_job_shows_what_it_was_submitted_without(farm: Farm) -> None:
    shows_what_it_was_submitted_without(farm)


@pytest.mark.xdist_group("postgres")
def test_the_record_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    url = fresh_database(postgres_url, f"missing_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", database_url=url)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        farm = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)
        shows_what_it_was_submitted_without(farm)


def shows_what_it_was_submitted_without(farm: Farm) -> None:
    answer = post_job(farm, missing_files=["textures/b/wood.png", "/mnt/lib/ü nï.png"])
    assert answer.status_code == 202, answer.text
    job = farm.client.get(answer.headers["Location"], headers=farm.admin).json()
    assert job["missing_files"] == ["textures/b/wood.png", "/mnt/lib/ü nï.png"]
    assert job["missing_count"] == 2

    complete = post_job(farm)
    assert complete.status_code == 202, complete.text
    job = farm.client.get(complete.headers["Location"], headers=farm.admin).json()
    assert (job["missing_files"], job["missing_count"]) == ([], 0)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"missing_files": ["a\x1b[2Jb.png"]}, "control character"),
        ({"missing_files": ["line\nbreak.png"]}, "control character"),
        ({"missing_files": ["nul\x00.png"]}, "control character"),
        ({"missing_files": [""]}, "missing_files"),
        ({"missing_files": ["x" * 1025]}, "missing_files"),
        ({"missing_files": ["a.png"] * (MAX_MISSING_LISTED + 1)}, "missing_files"),
        ({"missing_files": "textures/wood.png"}, "missing_files"),
        ({"missing_files": [{"path": "a.png"}]}, "missing_files"),
        ({"missing_files": [7]}, "missing_files"),
        ({"missing_files": ["a.png", "b.png"], "missing_count": 1}, "less than"),
        ({"missing_count": -1}, "missing_count"),
        ({"missing_count": "3"}, "missing_count"),
        ({"missing_count": 10**12}, "missing_count"),
    ],
)
def test_a_hostile_missing_list_is_refused(
    farm: Farm, fields: dict[str, Any], fragment: str
) -> None:
    before = farm.client.get("/api/jobs", headers=farm.admin).json()
    answer = post_job(farm, **fields)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["detail"], answer.text
    assert farm.client.get("/api/jobs", headers=farm.admin).json() == before


def test_the_client_sends_any_file_name_as_valid_text() -> None:
    """A file name may hold any character but `/` and NUL; what the client sends is
    always a list the manager accepts, and says how many there were in all."""
    names = ["ok.png", "esc\x1b[31m.png", "tab\there.png", "y" * 5000]
    names += [f"seq/f.{n:04d}.png" for n in range(300)]
    listed, count = missing_fields(names)
    job = JobCreate(
        main_file="s.blend", files={"s.blend": SHA}, missing_files=listed, missing_count=count
    )
    assert job.missing_count == 304
    assert len(job.missing_files) == MAX_MISSING_LISTED
    assert job.missing_files[:3] == ["ok.png", "esc?[31m.png", "tab?here.png"]
    assert job.missing_files[3].startswith("…") and job.missing_files[3].endswith("yyy")


def test_farmhand_job_names_them_and_counts_the_rest(farm: Farm) -> None:
    answer = post_job(farm, missing_files=["textures/b/wood.png"])
    detail = farm.client.get(answer.headers["Location"], headers=farm.admin).json()
    one = JobDetail.model_validate(detail)
    assert missing_line(one) == "submitted without 1 missing file: textures/b/wood.png"
    many = one.model_copy(update={"missing_files": ["a.png", "b.png"], "missing_count": 250})
    assert missing_line(many).splitlines() == [
        "submitted without 250 missing files:",
        "  a.png",
        "  b.png",
        "  … and 248 more",
    ]


def test_jobs_from_before_the_record_read_as_complete(tmp_path: Path) -> None:
    """A database at 0017 (no such columns) upgrades; its jobs show nothing missing."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine, "0017")
    now = utcnow()
    with engine.begin() as connection:
        owner = insert_old(
            connection, "users", name="ann", role="user", session_epoch=0, created_at=now
        )
        job_id = insert_old(
            connection, "jobs", owner_id=owner, name="old", type="animation",
            status="completed", priority=50, settings={"frame_start": 1, "frame_end": 1},
            main_file="scene.blend", created_at=now - timedelta(days=1),
        )  # fmt: skip
    upgrade(engine)
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and session.get(User, owner) is not None
        detail = job_detail(session, job)
    engine.dispose()
    assert (detail.missing_files, detail.missing_count) == ([], 0)
