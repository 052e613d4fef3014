"""The worker's content-addressed file cache and the job trees built from it.

Inputs are cached by SHA-256 under `<work-dir>/cache/sha256/ab/cdef…`, so a worker
downloads each .blend or texture once however many tasks and jobs use it. A job's tree
(`<work-dir>/jobs/<job_id>/…`) is made of hard links into the cache, so it costs no disk
space and keeps the relative paths Blender resolves (`//textures/wood.png`).
Cached blobs are made read-only: a hard link that someone writes to would corrupt every
job sharing that blob.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path, PurePosixPath

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.client.hashing import sha256_file
from farmhand.shared.paths import UnsafePathError, safe_relative_path
from farmhand.shared.schemas import TaskFile

log: FilteringBoundLogger = structlog.get_logger(__name__)

Download = Callable[[TaskFile, Path], object]
"""Fetch one task file into the given (temporary) path."""


class CacheError(Exception):
    """A file could not be placed: bad path, or downloaded bytes that do not match."""


def checked_relative_path(raw: str) -> str:
    """Refuse absolute paths and `..` even if the manager sent them (defence in depth)."""
    if PurePosixPath(raw).is_absolute() or os.path.isabs(raw) or ".." in PurePosixPath(raw).parts:
        raise CacheError(f"refusing task file path {raw!r}: it must stay inside the job")
    try:
        return safe_relative_path(raw)
    except UnsafePathError as exc:
        raise CacheError(f"refusing task file path {raw!r}: {exc}") from exc


class BlobCache:
    """Blobs named by their SHA-256, written atomically after their hash is checked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise CacheError(f"not a SHA-256: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def add(self, sha256: str, fill: Callable[[Path], object]) -> Path:
        """Return the cached blob, calling `fill(tmp_path)` to fetch it only if missing."""
        final = self.path_for(sha256)
        if final.is_file():
            return final
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"{sha256[:16]}-{uuid.uuid4().hex}"
        try:
            fill(tmp)
            actual = sha256_file(tmp)
            if actual != sha256:
                raise CacheError(f"downloaded file has SHA-256 {actual}, expected {sha256}")
            tmp.chmod(0o444)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def add_file(self, path: Path) -> str:
        """Copy a local file into the cache (used by tests and pre-seeding); its hash."""
        digest = sha256_file(path)
        self.add(digest, lambda tmp: shutil.copyfile(path, tmp))
        return digest


def _link_or_copy(source: Path, target: Path) -> None:
    """Place `source` at `target` atomically: a hard link, or a copy across filesystems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _same_content(target: Path, source: Path, sha256: str) -> bool:
    try:
        if os.path.samefile(target, source):
            return True
        if target.stat().st_size != source.stat().st_size:
            return False
    except OSError:
        return False
    return sha256_file(target) == sha256


def materialise(
    cache: BlobCache,
    job_dir: Path,
    files: Iterable[TaskFile],
    download: Download,
) -> Path:
    """Make `job_dir` hold every task file, downloading only blobs not yet cached.

    All paths are checked before anything is fetched, so a bad manifest changes nothing.
    """
    wanted = [(checked_relative_path(f.path), f) for f in files]
    for relative, task_file in wanted:
        blob = cache.add(task_file.sha256, partial(download, task_file))
        target = job_dir / relative
        if target.exists() and _same_content(target, blob, task_file.sha256):
            continue
        _link_or_copy(blob, target)
        log.debug("file placed", path=relative, sha256=task_file.sha256[:12])
    return job_dir


def prune_job_dirs(jobs_root: Path, keep: int = 3, current: int | None = None) -> None:
    """Remove all but the `keep` most recently used job trees (they are only links).

    A worker tends to get more tasks of the job whose files it holds, so recent trees
    are worth keeping; old ones would only pile up.
    """
    if not jobs_root.is_dir():
        return
    trees = sorted(
        (p for p in jobs_root.iterdir() if p.is_dir() and p.name != str(current)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in trees[max(0, keep - (current is not None)) :]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("job tree removed", path=str(old))
