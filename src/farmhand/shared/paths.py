"""Which relative paths may name a file inside a job's tree.

File names come from users (uploads, manifests) and end up as paths on the manager's and
every worker's disk, so anything that could climb out of the job's folder is refused
here, once, for every caller.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")
_FORBIDDEN_CHARS = set('\x00\\:*?"<>|')
_WINDOWS_DEVICES = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)
"""Names Windows opens as devices, whatever the folder or extension (`aux.png` too)."""


class UnsafePathError(ValueError):
    """A path that could escape the job's folder or is not portable."""


def safe_relative_path(raw: str) -> str:
    """Return `raw` normalised to `a/b/c` form, or raise `UnsafePathError` saying why."""
    if not raw or len(raw) > 1024:
        raise UnsafePathError("path must be 1 to 1024 characters")
    if any(ord(c) < 32 for c in raw) or _FORBIDDEN_CHARS & set(raw):
        raise UnsafePathError(f"path {raw!r} contains a forbidden character")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise UnsafePathError(f"path {raw!r} must be relative")
    parts = PurePosixPath(raw).parts
    if any(part in ("..", ".") for part in parts) or not parts:
        raise UnsafePathError(f"path {raw!r} must not contain '.' or '..' components")
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
