"""Which relative paths may name a file inside a job's tree.

File names come from users (uploads, manifests) and end up as paths on the manager's and
every worker's disk, so anything that could climb out of the job's folder is refused
here, once, for every caller; and so are paths that cannot exist together in one folder
on every worker (`check_coexisting`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")
_FORBIDDEN = re.compile(r'[\x00-\x1f\\:*?"<>|]')
"""Control characters, and what Windows forbids in a name: one regex, since a job's
manifest can hold 100,000 paths (a scan per character in Python took 3 s for them)."""
_WINDOWS_DEVICES = re.compile(
    r"^(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?$", re.IGNORECASE
)
"""Names Windows opens as devices, whatever the folder or extension (`aux.png` too);
Windows counts the superscript digits ¹²³ as digits here (`LPT¹.png` is a port)."""
MAX_PATH_CHARS = 1024
"""The longest relative path taken, in characters."""
MAX_COMPONENT_BYTES = 255
"""The longest file or folder name most filesystems take (ext4, XFS, APFS: 255 bytes;
NTFS: 255 UTF-16 units, which 255 UTF-8 bytes never exceed)."""


class UnsafePathError(ValueError):
    """A path that could escape the job's folder or is not portable."""


def safe_relative_path(raw: str) -> str:
    """Return `raw` normalised to `a/b/c` form, or raise `UnsafePathError` saying why."""
    if not raw or len(raw) > MAX_PATH_CHARS:
        raise UnsafePathError(f"path must be 1 to {MAX_PATH_CHARS} characters")
    if _FORBIDDEN.search(raw):
        raise UnsafePathError(f"path {raw!r} contains a forbidden character")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise UnsafePathError(f"path {raw!r} must be relative")
    parts = PurePosixPath(raw).parts
    if any(part in ("..", ".") for part in parts) or not parts:
        raise UnsafePathError(f"path {raw!r} must not contain '.' or '..' components")
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        raise UnsafePathError(
            f"path {raw!r} has a file or folder name over {MAX_COMPONENT_BYTES} bytes (UTF-8)"
        )
    if any(part.endswith((" ", ".")) for part in parts):
        raise UnsafePathError(f"path {raw!r} has a component ending in a space or dot")
    if any(_WINDOWS_DEVICES.match(part) for part in parts):
        raise UnsafePathError(f"path {raw!r} uses a name Windows reserves for a device")
    return "/".join(parts)


def safe_file_name(raw: str) -> str:
    """A single file name (an upload's name): no folders at all."""
    name = safe_relative_path(raw)
    if "/" in name:
        raise UnsafePathError(f"file name {raw!r} must not contain a folder")
    return name


class PathConflict(UnsafePathError):
    """Two paths of one job that cannot both exist on every worker's disk."""

    def __init__(self, message: str, first: str, second: str) -> None:
        super().__init__(message)
        self.first = first
        self.second = second


def _same_on_every_disk(path: str) -> str:
    """What `path` is called on a case-insensitive filesystem (Windows, macOS).

    `casefold` after NFC is a little stricter than any one filesystem (it takes `ß` for
    `ss`): a false refusal costs a rename, a missed collision fails every task of a job.
    """
    return unicodedata.normalize("NFC", path).casefold()


def check_coexisting(paths: Iterable[str]) -> None:
    """Raise `PathConflict` naming two of `paths` that cannot both be on a worker's disk.

    Every path is checked alone by `safe_relative_path`; this checks them together, for
    whatever makes one job's files (a manifest, a project zip, a file added later) one
    tree: a path that is a file and also a folder of another (`a` and `a/s.blend`: the
    job is accepted, then every task fails with "Is a directory"), and paths that differ
    only in case or Unicode normalisation (`s.blend` and `S.blend`: one file on Windows
    and macOS workers, so one silently replaces the other). `paths` are normalised
    (`safe_relative_path`'s form); linear in their total length.
    """
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    """A folder (its key) and a file path that needs it."""
    for path in paths:
        key = _same_on_every_disk(path)
        other = files.get(key)
        if other is not None:
            if other == path:
                raise PathConflict(f"path {path!r} appears twice", other, path)
            raise PathConflict(
                f"paths {other!r} and {path!r} differ only in case: they would be one "
                "file on Windows and macOS workers; rename one",
                other,
                path,
            )
        files[key] = path
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), path)
    for key, path in files.items():
        inside = folders.get(key)
        if inside is not None:
            folder = "/".join(inside.split("/")[: path.count("/") + 1])
            raise PathConflict(
                f"paths {path!r} and {inside!r} cannot both exist: {folder!r} would be "
                "a file and a folder",
                path,
                inside,
            )
