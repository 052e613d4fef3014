"""What a job's zip holds and how it ends when a file of it goes: output names, and
`EntryVanished`. The zip's bytes are laid out by `zipplan.py`.

A file that is gone when its turn comes (its job deleted meanwhile, `DELETE
/api/jobs/{id}?purge=true`) ends the zip with `EntryVanished`, and nothing more is
yielded: not the zip's end (its central directory), so what was sent reads as the
broken zip it is, never as a complete one of fewer files. Each file is opened only when
its turn comes: once open it stays readable whatever deletes it (POSIX), but opening
them all up front would hold one descriptor per output for as long as the download
lasts (tens of thousands for a big job, per client), which the connections need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from farmhand.shared.outputnames import OutputName, TemplateError, extension, render


class EntryVanished(Exception):
    """A file the zip was to hold was gone when its turn came (see the module's
    docstring). Not an `OSError`, which Starlette takes, in a streamed answer, for the
    client going away."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(f"{name} ({path.name}) was deleted before it was sent")
        self.name = name
        """The file's name in the zip."""
        self.path = path


@dataclass(frozen=True)
class StoredOutput:
    """An output row, as much as naming and sending it needs."""

    path: str
    sha256: str
    frame: int | None
    task_id: int | None


def output_names(
    job_name: str, job_id: int, outputs: Iterable[StoredOutput], template: str | None
) -> list[tuple[str, StoredOutput]]:
    """Each output's name for a download: by `template` for frames, the stored path
    (`frames/0001.png`, `video.mp4`) otherwise; two outputs never share a name."""
    named: dict[str, StoredOutput] = {}
    for output in outputs:
        if template is None or output.frame is None:
            name = output.path
        else:
            values = OutputName(
                job=job_name,
                job_id=job_id,
                frame=output.frame,
                ext=extension(output.path),
                task=output.task_id or 0,
            )
            name = render(template, values)
        if name in named:
            raise TemplateError(f"output template gives two outputs the name {name!r}")
        named[name] = output
    return list(named.items())
