"""A worker whose own machine cannot work gives its tasks back instead of failing them.

A real `farmhand manager` process and two worker agents in this process with stand-in
renderers: one whose work dir is a tiny tmpfs (a full disk, as QA found it), one healthy.
The broken one must not use up the job's attempts, fail it or get itself blocklisted; the
healthy one renders the job. Mounting needs root; where it is not allowed the test is
skipped, saying why.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from farmhand.localfarm import LocalFarm
from farmhand.worker.agent import RenderJob, RenderOutcome, WorkerSettings, run_worker
from tests.integration.conftest import FAKE_BLEND, png_bytes, submit_stand_in
from tests.integration.waiting import wait_for


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem: the 2 MiB .blend of the job below cannot be downloaded to it."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _render(job: RenderJob) -> RenderOutcome:
    for frame in job.task.render_frames:
        path = job.output_dir / f"{frame:04d}.png"
        path.write_bytes(png_bytes())
        job.on_frame_saved(frame, path)
    return RenderOutcome(ok=True)


def _start(farm: LocalFarm, name: str, work_dir: Path, stop: threading.Event) -> threading.Thread:
    settings = WorkerSettings(
        manager_url=farm.url,
        registration_token=farm.runner_token,
        name=name,
        work_dir=work_dir,
        heartbeat_interval=0.5,
        poll_wait=1.0,
        progress_interval=0.2,
        shutdown_grace=2.0,
    )
    thread = threading.Thread(
        target=run_worker,
        args=(settings,),
        kwargs={"renderer": _render, "blender_versions": ["3.4.1"], "stop": stop},
        daemon=True,
    )
    thread.start()
    return thread


def _job(admin: httpx.Client, job_id: int) -> dict[str, Any]:
    answer = admin.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def test_a_worker_with_a_full_disk_gives_tasks_back_and_the_job_completes_elsewhere(
    manager: LocalFarm, full_disk: Path, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {manager.admin_token}"}
    stop = threading.Event()
    with (
        httpx.Client(base_url=manager.url, headers=headers, timeout=30) as admin,
        capture_logs() as logs,
    ):
        blend = FAKE_BLEND + b"\x00" * (2 * 1024 * 1024)
        job_id = submit_stand_in(admin, blend=blend, frame_start=1, frame_end=3, max_attempts=2)
        broken = _start(manager, "broken", full_disk / "work", stop)
        try:

            def given_back() -> bool:
                return any("cannot work" in str(e.get("event")) for e in logs)

            wait_for(given_back, 60, "the broken worker to give its first task back")
            job = _job(admin, job_id)
            assert job["status"] != "failed", job["status_reason"]
            assert all(t["status"] == "queued" for t in job["tasks"]), job["tasks"]
            assert "cannot work" in (job["tasks"][0]["last_error"] or "") or any(
                "cannot work" in (t["last_error"] or "") for t in job["tasks"]
            )

            healthy = _start(manager, "healthy", tmp_path / "healthy", stop)

            def finished() -> dict[str, Any] | None:
                job = _job(admin, job_id)
                return job if job["status"] in ("completed", "failed") else None

            job = wait_for(finished, 120, "the job to finish")
            assert job["status"] == "completed", job["status_reason"]
            assert admin.get("/api/admin/blocklist").json() == [], "no worker was blamed"
        finally:
            stop.set()
            broken.join(15)
            if "healthy" in locals():
                healthy.join(15)
    faults = [e for e in logs if e["log_level"] == "error" and "cannot work" in e["event"]]
    assert len(faults) == 1, "said once while the fault lasts, not once a task"
    assert "No space left on device" in faults[0]["error"]
    assert not [e for e in logs if e["event"] == "task failed"]
