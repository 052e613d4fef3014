"""`POST /api/jobs/{id}/upload`: changing a job's inputs before any worker rendered them.

A job's inputs may change while it is queued or paused and none of its tasks was ever
handed to a worker; after that, frames of two versions of the scene would mix, and a
running worker would have its files changed under it. The main .blend is replaced only
by a .blend, and the job then asks for the Blender that saved the new one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import update

from farmhand.manager.api import jobs as jobs_api
from farmhand.manager.api.uploads import ingest
from farmhand.manager.db.models import Job, Task
from farmhand.manager.storage.blobs import StoredBlob
from tests.integration.conftest import (
    FAKE_BLEND,
    Farm,
    inputs,
    png_bytes,
    submit_stand_in,
    upload_input,
)
from tests.integration.test_blender_progress import BLEND_50, detail, runner
from tests.integration.test_manager_api import claim


def act(farm: Farm, job_id: int, action: str) -> None:
    answer = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": action}
    )
    assert answer.status_code == 200, answer.text


def test_the_main_file_is_replaced_only_by_a_blend(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    before = inputs(farm, job_id)

    answer = upload_input(farm, job_id, "scene.blend", png_bytes())
    assert answer.status_code == 400, answer.text
    assert "'scene.blend' is not a .blend file" in answer.json()["detail"]
    assert inputs(farm, job_id) == before, "the job keeps its .blend"
    assert detail(farm, job_id).blender_saved == "3.4"


def test_a_new_main_blend_sets_the_blender_the_job_needs(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    assert detail(farm, job_id).blender_saved == "3.4"

    answer = upload_input(farm, job_id, "scene.blend", BLEND_50)
    assert answer.status_code == 201, answer.text
    assert inputs(farm, job_id)["scene.blend"] == hashlib.sha256(BLEND_50).hexdigest()
    assert detail(farm, job_id).blender_saved == "5.0"
    assert claim(farm, runner(farm, "old", ["3.4.1"])) is None, "3.4 cannot open a 5.0 file"
    task = claim(farm, runner(farm, "new", ["5.0.1"]))
    assert task is not None and task["blender_saved"] == "5.0"


def test_a_texture_may_be_added_to_a_paused_job_no_worker_started(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    act(farm, job_id, "pause")
    answer = upload_input(farm, job_id, "tex/wood.png", png_bytes())
    assert answer.status_code == 201, answer.text
    assert "tex/wood.png" in inputs(farm, job_id)


@pytest.mark.parametrize("then", ["pause", "release"])
def test_once_a_worker_had_a_task_the_inputs_are_fixed(farm: Farm, then: str) -> None:
    """Paused with its task still rendering, or queued again after a worker gave its
    task back: either way a worker rendered (or renders) from the inputs it has."""
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=2, chunk_size=1)
    worker = farm.register_runner()
    task = claim(farm, worker)
    assert task is not None
    if then == "pause":
        act(farm, job_id, "pause")
        assert detail(farm, job_id).status == "paused"
    else:
        answer = farm.client.post(
            f"/api/runner/tasks/{task['task_id']}/release",
            headers=worker,
            json={"reason": "shutting down"},
        )
        assert answer.status_code == 200, answer.text
        assert detail(farm, job_id).status == "queued"
    before = inputs(farm, job_id)

    for path, data in (("scene.blend", BLEND_50), ("tex/wood.png", png_bytes())):
        answer = upload_input(farm, job_id, path, data)
        assert answer.status_code == 409, answer.text
        assert "has started rendering" in answer.json()["detail"]
    assert inputs(farm, job_id) == before


def test_a_job_started_while_its_file_streamed_in_keeps_its_inputs(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state is decided in the transaction that records the file: a task handed out
    while the bytes arrive (here, at the end of the upload) makes the upload a 409."""
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    act(farm, job_id, "pause")
    before = inputs(farm, job_id)
    context = farm.client.app.state.farm  # type: ignore[attr-defined]

    async def slow_upload(*args: Any, **kwargs: Any) -> tuple[StoredBlob, bool]:
        stored = await ingest(*args, **kwargs)
        with context.db.transaction() as session:  # a worker claims meanwhile
            session.execute(
                update(Task).where(Task.job_id == job_id).values(status="active", attempts=1)
            )
        return stored

    monkeypatch.setattr(jobs_api, "ingest", slow_upload)
    answer = upload_input(farm, job_id, "scene.blend", FAKE_BLEND + b"new")
    assert answer.status_code == 409, answer.text
    assert inputs(farm, job_id) == before


@pytest.mark.parametrize("state", ["completed", "canceled"])
def test_a_finished_job_keeps_its_inputs(farm: Farm, state: str) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_end=1)
    if state == "canceled":
        farm.client.delete(f"/api/jobs/{job_id}", headers=farm.admin)
    else:
        context = farm.client.app.state.farm  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            session.execute(
                update(Task).where(Task.job_id == job_id).values(status="completed", attempts=1)
            )
            job = session.get(Job, job_id)
            assert job is not None
            job.status = "completed"
    answer = upload_input(farm, job_id, "tex/wood.png", png_bytes())
    assert answer.status_code == 409, answer.text
    assert f"is {state}" in answer.json()["detail"]
