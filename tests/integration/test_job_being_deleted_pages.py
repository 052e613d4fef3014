"""A job whose deletion has begun is gone for everyone at once: the web UI's routes and
the admins' usage figures too.

Since 79ab9d8 a purge marks the job as being deleted in one short transaction and
removes its rows in batches after; the API answered 404 from the mark on, but the job's
web page and its thumbnails still found it for as long as its rows were being removed.
"""

from __future__ import annotations

from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Job
from farmhand.manager.scheduling.state import begin_deletion
from tests.integration.conftest import Farm, submit_stand_in
from tests.integration.test_scheduling import manager_of
from tests.integration.test_web_api import sign_in


def test_a_job_being_deleted_has_no_page_and_no_thumbnails(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    sign_in(farm)
    assert farm.client.get(f"/jobs/{job_id}").status_code == 200

    context = manager_of(farm)
    with context.db.transaction() as session:  # the purge's first step, and no further
        job = session.get(Job, job_id)
        assert job is not None
        begin_deletion(session, job, utcnow(), "deleted by a test")

    assert farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).status_code == 404
    page = farm.client.get(f"/jobs/{job_id}")
    assert page.status_code == 404 and "Job not found" in page.text
    thumbnail = farm.client.get(f"/api/jobs/{job_id}/files/1/thumbnail", headers=farm.admin)
    assert thumbnail.status_code == 404
    assert thumbnail.json()["detail"] == f"job {job_id} not found", thumbnail.text
    usage = farm.client.get("/api/admin/usage", headers=farm.admin).json()
    (admin,) = [user for user in usage["users"] if user["name"] == "admin"]
    assert admin["jobs"] == 0, "nor is it counted among its owner's jobs (QA round 8)"
