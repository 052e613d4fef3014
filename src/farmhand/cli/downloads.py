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
    """What a download wrote, by kind, and what it found already there."""

    frames: int
    passes: int
    videos: tuple[str, ...]
    skipped: int = 0
    """Files already there with the job's bytes: not fetched again."""
    replaced: tuple[str, ...] = ()
    """Files that were there with other bytes, replaced (paths inside the folder)."""

    def __str__(self) -> str:
        """`10 frames, 6 passes and the video (video.webm)`; `0 frames` for nothing."""
        parts = []
        if self.frames or not (self.passes or self.videos):
            parts.append(plural(self.frames, "frame"))
        if self.passes:
            parts.append(plural(self.passes, "pass", "passes"))
        parts += [f"the video ({name})" for name in self.videos]
        return listed(parts)

    def skipped_note(self) -> str | None:
        """`(98 already there, not fetched again)`; None if every file was fetched."""
        if not self.skipped:
            return None
        return f"({self.skipped} already there, not fetched again)"

    def replaced_note(self, folder: Path) -> str | None:
        """Which files were there with other bytes and are now the job's; None if none."""
        if not self.replaced:
            return None
        shown = ", ".join(self.replaced[:SHOWN_REPLACED])
        more = len(self.replaced) - SHOWN_REPLACED
        if more > 0:
            shown += f" and {more} more"
        return (
            f"replaced {plural(len(self.replaced), 'file')} in {folder} that differed from "
            f"the job's: {shown}"
        )


SHOWN_REPLACED = 5
"""Replaced files named in the warning; the rest are counted."""


def download_job(
    client: FarmhandClient,
    job_id: int,
    output: Path,
    on_progress: Progress,
    template: str | None = None,
) -> Downloaded:
    """Write the job's frames and video (named by `template`, else their paths) and its
    passes (by the paths the files list shows) into `output`, and say what was written.
    Files already there with the job's bytes are skipped, others replaced
    (`FarmhandClient.fetch_outputs`, the Python API's own download)."""
    report = client.fetch_outputs(
        job_id,
        output,
        on_progress,
        template=template,
        kinds=DOWNLOADED_KINDS,
    )
    files = report.files
    videos = [f for f in files if f.kind == "output" and f.frame is None]
    return Downloaded(
        frames=sum(1 for f in files if f.kind == "output" and f.frame is not None),
        passes=sum(1 for f in files if f.kind == "pass"),
        videos=tuple(PurePosixPath(video.path).name for video in videos),
        skipped=len(report.skipped),
        replaced=tuple(path.relative_to(output).as_posix() for path in report.replaced),
    )


def unfinished(job: JobDetail, frames: int | None = None, videos: int | None = None) -> str | None:
    """Why a download of `job` is not the whole job, or None when it is (completed).

    `frames`: the frames the download found on the manager and wrote
    (`Downloaded.frames`), said as the frames rendered so the warning agrees with the
    count it follows. The job's own `frames_done` is the worker's last progress report,
    which lags a frame already uploaded (and so downloaded) until the next one; it is
    said only where nothing was counted (a zip). `videos`: the videos it wrote, if
    counted: a job that asked for one and has none says so, or "40 of 40 frames
    rendered" would not tell what is missing."""
    done = job.frames_done if frames is None else frames
    rendered = f"{done} of {plural(job.frames_total, 'frame')} rendered"
    if job.settings.video is not None and videos == 0:
        rendered += " and no video"
    if job.status == JobStatus.COMPLETED:
        return None
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        return (
            f"job {job.id} {job.status.value}: {rendered}, and no more will be "
            f"unless it is requeued (farmhand requeue {job.id} --failed-only)"
        )
    return (
        f"job {job.id} is {job.status.value}: {rendered} so far; download again when it completes"
    )


def no_video(job: JobDetail) -> str:
    """Why `download --video` found no video of `job`, and what would make one."""
    if job.settings.video is None:
        return f"job {job.id} makes no video: it was submitted without --video"
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        why = f" ({job.status_reason})" if job.status_reason else ""
        return (
            f"job {job.id} {job.status.value} before its video was made{why}; "
            f"farmhand requeue {job.id} --failed-only makes what is missing"
        )
    if job.status == JobStatus.COMPLETED:
        return f"job {job.id} completed, but the manager has no video of it"
    return (
        f"job {job.id} is {job.status.value} and its video is not made yet: it is made once "
        f"every frame is rendered ({job.frames_done} of {plural(job.frames_total, 'frame')} "
        "so far)"
    )
