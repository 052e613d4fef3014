"""Two-way path variables for shared storage (a NAS every machine mounts).

One share has a different root on each platform: `/mnt/projects` on Linux, `P:\\` on
Windows, `/Volumes/projects` on macOS. Like Flamenco's two-way variables, a path is
stored in a platform-neutral form, `{projects}/shot-010/scene.blend`:

- on the way in (a job is submitted), a path as the submitter sees it is turned into
  the neutral form by finding which platform's root it starts with (longest match;
  Windows roots compare case-insensitively and with either slash);
- on the way out (a worker renders), the worker replaces `{projects}` with its own
  platform's root, so Blender is handed a path that exists on that machine.

The table is `variable → platform → root`. The manager holds one (its
`path_variables` setting, sent with every shared task); a worker may add or override
entries (`--path-map projects:linux=/mnt/projects`, or `--path-map linux=/mnt/projects`
for the variable `shared`). Platform names are free labels: `linux`, `windows`,
`darwin` by default (a worker says which it is with `--platform`), or any name, e.g.
two Linux studios whose NAS is mounted in different places.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping

from farmhand.shared.paths import UnsafePathError, safe_relative_path

PathVariables = Mapping[str, Mapping[str, str]]
"""variable → platform → root."""

DEFAULT_VARIABLE = "shared"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_NEUTRAL = re.compile(r"^\{([a-z][a-z0-9_-]{0,39})\}(?:/(.*))?$", re.DOTALL)
_WINDOWS_ROOT = re.compile(r"^([A-Za-z]:|\\\\|//)")


class PathMapError(ValueError):
    """A path that is on no known share, or a variable this platform has no root for."""


def current_platform() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    return "linux"


def _is_windows(root: str) -> bool:
    return bool(_WINDOWS_ROOT.match(root)) or "\\" in root


def _normalise(path: str, windows: bool) -> str:
    """Forward slashes, no trailing slash (but keep `/` alone); case-folded for Windows."""
    text = path.replace("\\", "/") if windows else path
    if len(text) > 1:
        text = text.rstrip("/")
    return text.casefold() if windows else text


def check_variables(variables: PathVariables) -> dict[str, dict[str, str]]:
    """The table, checked: names are short lower-case words, roots absolute paths."""
    checked: dict[str, dict[str, str]] = {}
    for name, roots in variables.items():
        if not _NAME.match(name):
            raise PathMapError(f"path variable {name!r}: use lower-case letters, digits, - or _")
        if not isinstance(roots, Mapping) or not roots:
            raise PathMapError(f"path variable {name!r} needs at least one platform root")
        checked[name] = {}
        for platform, root in roots.items():
            if not _NAME.match(platform):
                raise PathMapError(f"platform {platform!r} of {{{name}}}: use a short word")
            if not isinstance(root, str) or not (root.startswith("/") or _is_windows(root)):
                raise PathMapError(f"root {root!r} of {{{name}}} on {platform} is not absolute")
            checked[name][platform] = root
    return checked


def parse_path_maps(entries: Iterable[str]) -> dict[str, dict[str, str]]:
    """`[VARIABLE:]PLATFORM=ROOT` flags (VARIABLE defaults to `shared`) → a table."""
    table: dict[str, dict[str, str]] = {}
    for entry in entries:
        key, equals, root = entry.partition("=")
        if not equals or not root:
            raise PathMapError(f"--path-map {entry!r}: write [VARIABLE:]PLATFORM=ROOT")
        variable, colon, platform = key.partition(":")
        if not colon:
            variable, platform = DEFAULT_VARIABLE, key
        table.setdefault(variable.strip(), {})[platform.strip()] = root
    return check_variables(table)


def merged(base: PathVariables, override: PathVariables) -> dict[str, dict[str, str]]:
    """`base` with `override`'s roots on top (a worker's own flags win)."""
    table = {name: dict(roots) for name, roots in base.items()}
    for name, roots in override.items():
        table.setdefault(name, {}).update(roots)
    return table


def to_neutral(path: str, variables: PathVariables) -> str:
    """A submitter's path → `{variable}/relative/path` (already neutral paths pass)."""
    neutral = _NEUTRAL.match(path)
    if neutral:
        variable, rest = neutral.groups()
        return _join(variable, rest or "", path)
    best: tuple[int, str, str] | None = None
    for variable, roots in variables.items():
        for root in roots.values():
            windows = _is_windows(root)
            prefix, candidate = _normalise(root, windows), _normalise(path, windows)
            inside = candidate == prefix or candidate.startswith(prefix.rstrip("/") + "/")
            if inside and (best is None or len(prefix) > best[0]):
                rest = path.replace("\\", "/") if windows else path
                best = (len(prefix), variable, rest[len(prefix.rstrip("/")) :].strip("/"))
    if best is None:
        known = ", ".join(
            f"{root} ({{{name}}} on {platform})"
            for name, roots in variables.items()
            for platform, root in roots.items()
        )
        raise PathMapError(
            f"{path!r} is on no shared storage the manager knows"
            + (f"; known roots: {known}" if known else " (it has no path_variables)")
        )
    return _join(best[1], best[2], path)


def _join(variable: str, rest: str, original: str) -> str:
    if not rest:
        return "{" + variable + "}"
    try:
        clean = safe_relative_path(rest.replace("\\", "/"))
    except UnsafePathError as error:
        raise PathMapError(f"{original!r}: {error}") from error
    return "{" + variable + "}/" + clean


def to_local(neutral: str, platform: str, variables: PathVariables) -> str:
    """`{variable}/relative/path` → the path on `platform`, in that platform's style."""
    match = _NEUTRAL.match(neutral)
    if match is None:
        raise PathMapError(f"{neutral!r} is not a shared-storage path ({{variable}}/…)")
    variable, rest = match.groups()
    root = variables.get(variable, {}).get(platform)
    if root is None:
        raise PathMapError(
            f"no root for {{{variable}}} on platform {platform!r}: set it in the manager's "
            f"path_variables or pass --path-map {variable}:{platform}=ROOT to the worker"
        )
    if not rest:
        return root
    if _is_windows(root):
        return root.rstrip("\\/") + "\\" + rest.replace("/", "\\")
    return root.rstrip("/") + "/" + rest


def remap_pairs(variables: PathVariables, platform: str) -> list[tuple[str, str]]:
    """(another platform's root, this platform's root) for every variable this platform
    has a root for: what a worker rewrites in the absolute paths saved inside a .blend."""
    pairs = []
    for roots in variables.values():
        own = roots.get(platform)
        if own is None:
            continue
        pairs += [(root, own) for name, root in roots.items() if name != platform and root != own]
    # Longest first, so a root nested in another (a cache inside the projects share) wins.
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)
