"""Submitting a scene with everything it uses: pack, check, upload what is new, create.

The order matters to the user: missing files are reported before a single byte is
uploaded (a 2 GB upload followed by "texture not found" on the farm is the classic
render-farm disappointment), and the job exists only once all its files are stored.

A submit stopped on purpose while it uploads (Ctrl-C, or SIGTERM, which the Blender
add-on's Cancel sends) is the user saying they do not want it: what it began on the
manager is freed again (`free_canceled`), or its unfinished uploads would hold their
announced sizes of the user's quota for `blob_retention_days`, and the files it stored
their size until garbage collection, and the next submit could be refused for it. A
submit that stops otherwise (the manager unreachable past the retries, a network cut, a
killed or crashed process) keeps them: running it again resumes each upload where it
stopped (`transfer.py`). Freeing takes at most `FREE_WITHIN` seconds; what a manager that
does not answer in that time still holds stays, and the next run resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farmhand.client.client import (
    MAX_JOB_FILES,
    FarmhandClient,
    check_job_body,
    check_tiles,
    job_body,
)
from farmhand.client.errors import FarmhandError, JobTooLarge
from farmhand.client.packing import PackedProject, pack
from farmhand.client.transfer import Advance, Entry, Uploader, UploadReport, hash_files
from farmhand.shared.limits import JOB_BODY_MAX_BYTES
from farmhand.shared.schemas import JobAccepted, JobCreate, JobSettings, missing_fields


class MissingFiles(RuntimeError):
    """The scene uses files that do not exist; nothing was uploaded."""

    def __init__(self, missing: list[Path]) -> None:
        listing = "\n".join(f"  {path}" for path in missing)
        super().__init__(
            f"{len(missing)} file(s) the scene uses do not exist:\n{listing}\n"
            "fix the paths, or submit with --allow-missing to render without them"
        )
        self.missing = missing


@dataclass(frozen=True)
class Submitted:
    job: JobAccepted
    report: UploadReport
    missing: list[Path]
    files: int


@dataclass(frozen=True)
class SubmitHooks:
    """Progress reporting for a person watching (the CLI's bars); all optional."""

    packed: Callable[[PackedProject], None] | None = None
    hashed: Callable[[int], None] | None = None
    """Called with the size of each file once hashed."""
    uploading: Callable[[int, int], None] | None = None
    """Called with the (bytes, files) of the distinct blobs, before uploading."""
    advance: Advance | None = None


def submit_project(
    client: FarmhandClient,
    blend: Path,
    settings: JobSettings,
    *,
    project: Path | None = None,
    allow_missing: bool = False,
    threads: int = 4,
    hooks: SubmitHooks | None = None,
) -> Submitted:
    """Pack `blend` and what it uses, upload the blobs the manager lacks, create the job.

    Raises TilesRefused (before anything is packed) for tiles of a scene that renders
    several views; MissingFiles (before any upload) unless `allow_missing`; JobTooLarge
    (before any file is hashed or uploaded) if the manager would refuse the job's
    manifest for its size; PackError if a .blend cannot be read; FarmhandError for the
    manager's refusals.
    """
    check_tiles(blend, settings)
    hooks = hooks or SubmitHooks()
    fields = settings.model_dump()
    if not fields["name"]:
        fields["name"] = blend.stem
    frames = range(settings.frame_start, settings.frame_end + 1, settings.frame_step)
    with pack(blend, project, frames) as packed:
        if hooks.packed is not None:
            hooks.packed(packed)
        if packed.missing and not allow_missing:
            raise MissingFiles(packed.missing)
        # The job keeps what it was submitted without: its frames are no complete render.
        listed, count = missing_fields([_as_named(p, packed.project) for p in packed.missing])
        fields.update(missing_files=listed, missing_count=count)
        _check_size(fields, packed.main_file, list(packed.files))
        entries = hash_files(packed.files, hooks.hashed)
        uploader = Uploader(client, threads, advance=hooks.advance)
        if hooks.uploading is not None:
            distinct = _distinct(entries)
            hooks.uploading(sum(e.size for e in distinct), len(distinct))
        try:
            report = uploader.upload(entries)
        except KeyboardInterrupt as stop:
            if not uploader.begun:  # stopped: none begins any more
                raise
            raise SubmitCanceled(free_canceled(client, dict(uploader.begun))) from stop
        job = JobCreate(
            **fields,
            main_file=packed.main_file,
            files={relative: entry.sha256 for relative, entry in entries.items()},
        )
        accepted = client.create_job(job)
    return Submitted(accepted, report, packed.missing, len(entries))


FREE_WITHIN = 5.0
"""Seconds a canceled submit may spend freeing what it began (`free_canceled`): a cancel
must end soon even with a manager that does not answer (the add-on's panel waits)."""
REQUEST_WITHIN = 2.0
"""Seconds for each of those requests: a manager that answers does so in milliseconds."""
BUSY_PAUSE = 0.2
"""Pause before aborting an upload again that a chunk was still being written to."""


@dataclass(frozen=True)
class Freed:
    """What a canceled submit freed of what it had begun to upload."""

    aborted: int
    """Unfinished uploads aborted: their bytes are gone, and their hold on the quota."""
    released: int
    """Files it had stored, no job's, given up: they no longer count (`DELETE /api/blobs`)."""
    error: str | None = None
    """Why the rest could not be freed (the manager did not answer in time); None if
    everything was: whatever is left, the next run of the submit resumes."""
    unsure: int = 0
    """Files the manager held nothing of when asked, though their bytes may still have
    been on the way (sent whole, or a resumable upload whose start went unanswered):
    it may yet store them, and they then count until garbage collection takes them.
    Not said to be discarded (cli/jobs_cmd.py `canceled_words`)."""
    kept: int = 0
    """Files the manager kept (`409`): a job of the user's uses them, or another submit of
    theirs asked for them since. Those count as before; not said to be discarded."""


class SubmitCanceled(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) while the submit uploaded, once what it began is freed
    (`freed`); the interrupt that stopped it is its `__cause__`."""

    def __init__(self, freed: Freed) -> None:
        super().__init__("submit canceled")
        self.freed = freed


def free_canceled(
    client: FarmhandClient, begun: dict[str, int], within: float = FREE_WITHIN
) -> Freed:
    """Free what a canceled submit began on the manager: abort its unfinished uploads
    (found in `GET /api/uploads` by hash, so also those whose first answer never came
    back), then release the files it stored that no job uses, largest first (the most
    quota for the time there is). `begun`: the blobs it began to upload, by hash, with
    their sizes. Within `within` seconds; a manager that does not answer, or a second
    Ctrl-C, ends it early. Aborting first matters: a last chunk still being stored holds
    its upload until it is, and the file is then the user's to release."""
    deadline = time.monotonic() + within

    def limit() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"not done within {within:g} s")
        return min(left, REQUEST_WITHIN)

    aborted = released = unsure = kept = 0
    listed: set[str] = set()
    try:
        for upload in client.list_uploads(timeout=limit()):
            if upload.sha256 in begun:
                listed.add(upload.sha256)
                aborted += _abort(client, upload.id, limit)
        for sha256 in sorted(begun, key=lambda sha: -begun[sha]):
            try:
                client.release_blob(sha256, timeout=limit())
                released += 1
            except FarmhandError as error:
                if error.status_code not in (404, 409):
                    raise  # 404: nothing of it stored; 409: a job may use it, so kept
                if error.status_code == 409:
                    kept += 1
                elif sha256 not in listed:
                    unsure += 1  # not aborted here: its bytes may land after this
    except (FarmhandError, TimeoutError, KeyboardInterrupt) as error:
        said = "stopped again" if isinstance(error, KeyboardInterrupt) else str(error)
        return Freed(aborted, released, said, unsure, kept)
    return Freed(aborted, released, unsure=unsure, kept=kept)


def _abort(client: FarmhandClient, upload_id: str, limit: Callable[[], float]) -> int:
    """Abort one upload: 1, or 0 if it was gone already (stored or aborted meanwhile).
    A `409` is a chunk of it that another process of the manager is still writing (the
    one this submit was sending, cut off): asked again until it lets go."""
    while True:
        try:
            client.abort_upload(upload_id, timeout=limit())
            return 1
        except FarmhandError as error:
            if error.status_code == 404:
                return 0
            if error.status_code != 409:
                raise
        time.sleep(min(BUSY_PAUSE, limit()))


def _as_named(path: Path, project: Path) -> str:
    """A missing file as the artist knows it: inside the project relative to it (as the
    job's tree has it), outside it by its own path."""
    try:
        return path.relative_to(project).as_posix()
    except ValueError:
        return str(path)


def _check_size(fields: dict[str, Any], main_file: str, paths: list[str]) -> None:
    """JobTooLarge if the job's manifest will be too large for the manager, measured
    before hashing: a hash is 64 hex digits whatever the file, so the body `create_job`
    will send has the same length with stand-in hashes."""
    if len(paths) > MAX_JOB_FILES:
        raise JobTooLarge(len(paths), None, JOB_BODY_MAX_BYTES, MAX_JOB_FILES)
    planned = JobCreate(**fields, main_file=main_file, files=dict.fromkeys(paths, "0" * 64))
    check_job_body(job_body(planned), len(paths))


def _distinct(entries: dict[str, Entry]) -> list[Entry]:
    return list({entry.sha256: entry for entry in entries.values()}.values())
