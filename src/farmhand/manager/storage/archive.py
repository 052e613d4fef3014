"""A zip of a job's outputs (or inputs), produced while it is sent, and output names.

The zip is written into a small buffer that is emptied after every chunk, so memory
stays constant whatever the job's size, and nothing is staged on disk: the first bytes
leave before the second file is read. zipfile writes to a non-seekable sink with data
descriptors (sizes after the data) and ZIP64 records, so entries may be any size.
Images are stored, not deflated (they are compressed already).

A file that is gone when its turn comes (its job deleted meanwhile, `DELETE
/api/jobs/{id}?purge=true`) ends the zip with `EntryVanished`, and nothing more is
yielded: not the zip's end (its central directory), so what was sent reads as the
broken zip it is, never as a complete one of fewer files. Each file is opened only when
its turn comes: once open it stays readable whatever deletes it (POSIX), but opening
them all up front would hold one descriptor per output for as long as the download
lasts (tens of thousands for a big job, per client), which the connections need.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from farmhand.shared.outputnames import OutputName, TemplateError, extension, render

CHUNK = 1024 * 1024


class _Sink:
    """A write-only, non-seekable file for zipfile that hands out what it was given."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class EntryVanished(Exception):
    """A file the zip was to hold was gone when its turn came (see the module's
    docstring). Not an `OSError`, which Starlette takes, in a streamed answer, for the
    client going away."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(f"{name} ({path.name}) was deleted before it was sent")
        self.name = name
        """The file's name in the zip."""
        self.path = path


def stream_zip(entries: Iterable[tuple[str, Path]]) -> Iterator[bytes]:
    """Yield a zip of `(name in archive, file on disk)` pairs, chunk by chunk; raise
    `EntryVanished`, without the zip's end, if a file is gone when its turn comes."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, path in entries:
            try:
                opened = path.open("rb")
            except FileNotFoundError:
                # Leaving the `with` writes the zip's end into the sink, never sent.
                raise EntryVanished(name, path) from None
            with opened as source, archive.open(name, "w", force_zip64=True) as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    yield sink.drain()
            yield sink.drain()
    yield sink.drain()


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
