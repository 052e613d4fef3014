"""A job's makespan on a farm of workers pinned one to a core, for the benchmarks that
compare a farm with one Blender (`farm_vs_single.py`, `tiles_vs_whole.py`)."""

from __future__ import annotations

import time
from pathlib import Path

from farmhand.localfarm import local_farm
from farmhand.shared.schemas import JobSettings, JobStatus


def makespan(
    root: Path, blend: Path, settings: JobSettings, cores: list[int], blender: str
) -> float:
    """Seconds from submit to the job's end, with one worker per core in `cores`, each
    pinned with `taskset` and rendering with one thread."""
    with local_farm(root) as farm:
        farm.start_manager()
        for core in cores:
            farm.start_worker(
                f"core{core}",
                "--threads",
                "1",
                blender=blender,
                prefix=["taskset", "-c", str(core)],
            )
        time.sleep(3)  # let the workers register and start polling
        with farm.client() as client:
            started = time.monotonic()
            job_id = client.submit_blend(blend, settings).id
            while True:
                job = client.get_job(job_id)
                if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED):
                    break
                time.sleep(0.1)
            elapsed = time.monotonic() - started
        if job.status is not JobStatus.COMPLETED:
            raise SystemExit(f"job {job.status}: {job.status_reason}\n{farm.logs()}")
        return elapsed
