"""The worker's content-addressed file cache and the job trees built from it.

Inputs are cached by SHA-256 under `<work-dir>/cache/sha256/ab/cdef…`, so a worker
downloads each .blend or texture once however many tasks and jobs use it. A job's tree
(`<work-dir>/jobs/<job_id>/…`) is made of hard links into the cache, so it costs no disk
space and keeps the relative paths Blender resolves (`//textures/wood.png`); where a
link is impossible (the tree on another filesystem, Windows without the right) the
file is copied instead. No symlinks: they need privileges on Windows.
Cached blobs are made read-only: a hard link that someone writes to would corrupt every
job sharing that blob.

The cache may have a size limit (`--cache-size 20G`). A blob's modification time is
its last use (set each time a job needs it; it survives a restart, unlike any
in-memory list, and unlike atime it is not switched off by `noatime` mounts). Over
the limit, the least recently used blobs go first, never one the current job uses.
The limit is for the cache and the job trees together: a tree's hard link keeps a removed
blob's bytes on the disk, so the trees of other jobs are removed before any blob is.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.shared.blobpaths import blob_path, iter_blobs
from farmhand.shared.hashing import sha256_file
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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """`20G`, `500M`, `1.5T`, `4096` → bytes (powers of 1024; `GiB`/`GB` read the same)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 20G, 500M or a number of bytes)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "bkmgt".index(unit.lower() or "b"))


@dataclass
class LayoutReport:
    """What building a job's tree cost: what a user would ask after "why so slow?"."""

    downloaded_files: int = 0
    downloaded_bytes: int = 0
    cached_files: int = 0
    linked: int = 0
    copied: int = 0


@dataclass(frozen=True)
class Evicted:
    sha256: str
    size: int


class BlobCache:
    """Blobs named by their SHA-256, written atomically after their hash is checked."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        """None: no limit."""
        self._tmp = root / "tmp"

    def remove_partial_downloads(self) -> None:
        """Remove what `tmp/` holds: downloads a killed or crashed worker never finished
        (a finished one is moved out at once). Only while no other process can be
        downloading into it: the caller holds the work dir (`identity.holding_work_dir`)."""
        try:
            partial = list(self._tmp.iterdir())
        except FileNotFoundError:
            return
        size = 0
        for path in partial:
            try:
                size += path.stat().st_size
                path.unlink()
            except IsADirectoryError:
                shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                continue
        if partial:
            log.info("partial downloads removed", files=len(partial), bytes=size)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise CacheError(f"not a SHA-256: {sha256!r}")
        return blob_path(self.root, sha256)

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def add(self, sha256: str, fill: Callable[[Path], object]) -> Path:
        """Return the cached blob, calling `fill(tmp_path)` to fetch it only if missing."""
        final = self.path_for(sha256)
        if final.is_file():
            self.touch(final)
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

    @staticmethod
    def touch(blob: Path) -> None:
        """Mark a blob as used now (its mtime is its place in the LRU order)."""
        try:
            os.utime(blob)
        except OSError as exc:  # read-only cache, odd filesystem: only the order suffers
            log.debug("cannot mark blob as used", path=str(blob), error=str(exc))

    def _entries(self) -> list[tuple[float, int, str, Path]]:
        """(last use, size, sha256, path) of every cached blob."""
        return [
            (stat.st_mtime, stat.st_size, sha, blob) for sha, blob, stat in iter_blobs(self.root)
        ]

    def size(self) -> int:
        return sum(size for _, size, _, _ in self._entries())

    def evict(
        self,
        keep: Collection[str] = (),
        reserve: int = 0,
        trees: Path | None = None,
        current: Path | None = None,
    ) -> list[Evicted]:
        """Remove least recently used blobs until the cache fits its limit, with room for
        `reserve` more bytes (what is about to be downloaded).

        Blobs in `keep` (the current job's) are never removed, even if they alone are
        over the limit: the job needs them. Job trees hold hard links, so a removed blob's
        bytes stay on the disk while a tree links it: before removing any, every tree in
        `trees` but `current` (the current task's) is removed (`prune_job_dirs`). The log
        counts as freed only the bytes of blobs no tree still linked.
        """
        if self.max_bytes is None:
            return []
        target = max(0, self.max_bytes - reserve)
        entries = sorted(self._entries())
        total = sum(size for _, size, _, _ in entries)
        if total <= target:
            return []
        if trees is not None:
            prune_job_dirs(trees, keep=0, current=None if current is None else current.name)
        removed: list[Evicted] = []
        freed = 0
        for _, size, sha, blob in entries:
            if total <= target:
                break
            if sha in keep:
                continue
            try:
                links = blob.stat().st_nlink
                blob.unlink()
            except OSError as exc:
                log.warning("cannot evict blob", sha256=sha[:12], error=str(exc))
                continue
            total -= size
            freed += size if links == 1 else 0
            removed.append(Evicted(sha, size))
        if removed:
            log.info(
                "cache evicted",
                blobs=len(removed),
                freed_bytes=freed,
                still_linked_bytes=sum(e.size for e in removed) - freed,
                cache_bytes=total,
                limit_bytes=self.max_bytes,
            )
        if total > target and not reserve:
            log.warning(
                "cache over its limit: the current job alone needs more",
                cache_bytes=total,
                limit_bytes=self.max_bytes,
            )
        return removed


def _link_or_copy(source: Path, target: Path) -> bool:
    """Place `source` at `target` atomically: a hard link, or a copy where linking fails
    (another filesystem, Windows without the right, a filesystem without links).
    True if it was linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, tmp)
            linked = True
        except OSError:
            shutil.copyfile(source, tmp)
            linked = False
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return linked


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
    trees: Path | None = None,
) -> LayoutReport:
    """Make `job_dir` hold every task file, downloading only blobs not yet cached.

    All paths are checked before anything is fetched, so a bad manifest changes nothing.
    Room for what must be downloaded is made first, and the cache is trimmed to its
    limit again at the end; neither ever removes a blob of this job. `trees`: the folder
    of the job trees (`job_dir`'s siblings), removed before blobs when room is needed.
    """
    wanted = [(checked_relative_path(f.path), f) for f in files]
    keep = {f.sha256 for _, f in wanted}
    lacking = {f.sha256: f.size for _, f in wanted if not cache.has(f.sha256)}
    if lacking:
        cache.evict(keep, reserve=sum(lacking.values()), trees=trees, current=job_dir)
    report = LayoutReport()
    for relative, task_file in wanted:
        fetched: list[int] = []

        def fill(tmp: Path, task_file: TaskFile = task_file, fetched: list[int] = fetched) -> None:
            try:
                download(task_file, tmp)
            except OSError as exc:
                if exc.filename is not None or exc.errno is None:
                    raise
                # A write's error names no file ("[Errno 28] No space left on device"):
                # the worker's log and the task's note then said nothing of where.
                raise OSError(exc.errno, exc.strerror, str(tmp)) from exc
            fetched.append(tmp.stat().st_size)

        blob = cache.add(task_file.sha256, fill)
        if fetched:
            report.downloaded_files += 1
            report.downloaded_bytes += fetched[0]
        else:
            report.cached_files += 1
        target = job_dir / relative
        if target.exists() and _same_content(target, blob, task_file.sha256):
            continue
        if _link_or_copy(blob, target):
            report.linked += 1
        else:
            report.copied += 1
        log.debug("file placed", path=relative, sha256=task_file.sha256[:12])
    cache.evict(keep, trees=trees, current=job_dir)
    return report


def prune_job_dirs(jobs_root: Path, keep: int = 3, current: int | str | None = None) -> None:
    """Remove all but the `keep` most recently used job trees (they are only links),
    never `current`'s (a job id or folder name).

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


TASK_LOGS_KEPT = 200
TASK_LOGS_MAX_BYTES = 512 * 1024**2
"""The worker's own copies of its task logs (`<work-dir>/logs`): the newest 200, and at
most 512 MiB of them. The manager keeps every task's log; these are for reading on the
machine right after a task, so a long-running node must not pile them up forever."""


def prune_task_logs(
    logs_dir: Path,
    keep: int = TASK_LOGS_KEPT,
    max_bytes: int = TASK_LOGS_MAX_BYTES,
    current: Path | None = None,
) -> None:
    """Remove the oldest task logs beyond the newest `keep` or `max_bytes` together,
    never `current` (the log of a task still running)."""
    try:
        logs = [(p.stat(), p) for p in logs_dir.iterdir() if p.is_file() and p != current]
    except OSError:
        return  # no logs yet, or an unreadable folder: nothing to prune
    logs.sort(key=lambda entry: entry[0].st_mtime, reverse=True)
    total, removed = 0, 0
    for index, (stat, path) in enumerate(logs):
        total += stat.st_size
        if index < keep and total <= max_bytes:
            continue
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("old task logs removed", files=removed, path=str(logs_dir))
