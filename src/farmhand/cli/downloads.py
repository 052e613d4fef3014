"""What `farmhand download` and `submit --wait -o` fetch of a job, and what they say
about it: every file the scene was asked to write (`DOWNLOADED_KINDS`: frames, the
video, compositor File Output passes), counted by kind, and a warning when the job is
not done, so a partial download never passes for the whole job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farmhand.cli.words import listed, plural
from farmhand.client import FarmhandClient
from farmhand.shared.outputnames import DOWNLOADED_KINDS
from farmhand.shared.schemas import JobDetail, JobStatus

Progress = Callable[[int, int], None]
"""Bytes done and bytes in all, after each chunk."""


@dataclass(frozen=True)
class Downloaded:
    """What a download wrote, by kind."""

    frames: int
    passes: int
    videos: tuple[str, ...]

    def __str__(self) -> str:
        """`10 frames, 6 passes and the video (video.webm)`; `0 frames` for nothing."""
        parts = []
        if self.frames or not (self.passes or self.videos):
            parts.append(plural(self.frames, "frame"))
        if self.passes:
            parts.append(plural(self.passes, "pass", "passes"))
        parts += [f"the video ({name})" for name in self.videos]
        return listed(parts)


def download_job(
    client: FarmhandClient,
    job_id: int,
    output: Path,
    on_progress: Progress,
    template: str | None = None,
) -> Downloaded:
    """Write the job's frames and video (named by `template`, else their paths) and its
    passes (by the paths the files list shows) into `output`, and say what was written."""
    files = [f for f in client.list_files(job_id) if f.kind in DOWNLOADED_KINDS]
    total = sum(f.size for f in files)
    client.download_outputs(
        job_id,
        output,
        lambda done, _: on_progress(done, total),
        template=template,
        kinds=DOWNLOADED_KINDS,
    )
    videos = [f for f in files if f.kind == "output" and f.frame is None]
    return Downloaded(
        frames=sum(1 for f in files if f.kind == "output" and f.frame is not None),
        passes=sum(1 for f in files if f.kind == "pass"),
        videos=tuple(PurePosixPath(video.path).name for video in videos),
    )


def unfinished(job: JobDetail) -> str | None:
    """Why a download of `job` is not the whole job, or None when it is (completed)."""
    rendered = f"{job.frames_done} of {plural(job.frames_total, 'frame')}"
    if job.status == JobStatus.COMPLETED:
        return None
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        return (
            f"job {job.id} {job.status.value}: {rendered} rendered, and no more will be "
            f"unless it is requeued (farmhand requeue {job.id} --failed-only)"
        )
    return (
        f"job {job.id} is {job.status.value}: {rendered} rendered so far; "
        "download again when it completes"
    )
