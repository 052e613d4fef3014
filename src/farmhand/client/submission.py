"""Submitting a scene with everything it uses: pack, check, upload what is new, create.

The order matters to the user: missing files are reported before a single byte is
uploaded (a 2 GB upload followed by "texture not found" on the farm is the classic
render-farm disappointment), and the job exists only once all its files are stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from farmhand.client.client import FarmhandClient
from farmhand.client.packing import PackedProject, pack
from farmhand.client.transfer import Advance, Entry, Uploader, UploadReport, hash_files
from farmhand.shared.schemas import JobAccepted, JobCreate, JobSettings


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

    Raises MissingFiles (before any upload) unless `allow_missing`; PackError if a .blend
    cannot be read; FarmhandError for the manager's refusals.
    """
    hooks = hooks or SubmitHooks()
    with pack(blend, project) as packed:
        if hooks.packed is not None:
            hooks.packed(packed)
        if packed.missing and not allow_missing:
            raise MissingFiles(packed.missing)
        entries = hash_files(packed.files, hooks.hashed)
        uploader = Uploader(client, threads, advance=hooks.advance)
        if hooks.uploading is not None:
            distinct = _distinct(entries)
            hooks.uploading(sum(e.size for e in distinct), len(distinct))
        report = uploader.upload(entries)
        fields = settings.model_dump()
        if not fields["name"]:
            fields["name"] = blend.stem
        job = JobCreate(
            **fields,
            main_file=packed.main_file,
            files={relative: entry.sha256 for relative, entry in entries.items()},
        )
        accepted = client.create_job(job)
    return Submitted(accepted, report, packed.missing, len(entries))


def _distinct(entries: dict[str, Entry]) -> list[Entry]:
    return list({entry.sha256: entry for entry in entries.values()}.values())
