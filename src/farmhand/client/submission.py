"""Submitting a scene with everything it uses: pack, check, upload what is new, create.

The order matters to the user: missing files are reported before a single byte is
uploaded (a 2 GB upload followed by "texture not found" on the farm is the classic
render-farm disappointment), and the job exists only once all its files are stored.
"""

from __future__ import annotations

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
from farmhand.client.errors import JobTooLarge
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
        report = uploader.upload(entries)
        job = JobCreate(
            **fields,
            main_file=packed.main_file,
            files={relative: entry.sha256 for relative, entry in entries.items()},
        )
        accepted = client.create_job(job)
    return Submitted(accepted, report, packed.missing, len(entries))


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
