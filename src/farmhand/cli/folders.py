"""Whether a folder a command will write into can be used: said before the work starts.

`farmhand submit --wait -o DIR` renders for hours before it writes DIR, and `farmhand
manager --data-dir DIR` would fail deep in its start-up: both ask here first, so a
folder that cannot be made or written is one line naming the folder and the reason,
before anything is submitted, downloaded or served. One home for the check, so every
command says it the same way.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path


class FolderError(Exception):
    """A folder cannot be created or written; the message names it and says why."""


def why(error: OSError) -> str:
    """An `OSError` as a person reads it: the system's reason, without errno numbers."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (error.strerror or str(error)).lower()


def check_writable_folder(path: Path) -> None:
    """Raise `FolderError` unless `path` is, or can be made, a folder this process can
    write files into.

    It is tried for real (folders made, a file written), the only test that holds for
    root, read-only mounts and `/proc`; what the check made it removes again, so a
    command refused later leaves nothing behind.
    """
    missing: list[Path] = []
    existing = path
    while not existing.exists() and existing.parent != existing:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == path else str(existing)
        raise FolderError(f"cannot write to the folder {path}: {where} is not a folder")
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as error:
                inside = "" if folder == path else f" ({folder})"
                raise FolderError(
                    f"cannot create the folder {path}{inside}: {why(error)}"
                ) from None
            made.append(folder)
        try:
            with tempfile.TemporaryFile(dir=path, prefix=".farmhand-check-"):
                pass
        except OSError as error:
            raise FolderError(f"cannot write to the folder {path}: {why(error)}") from None
    finally:
        for folder in reversed(made):
            folder.rmdir()
