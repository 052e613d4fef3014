"""A copy of a manager's data dir, taken while the manager runs (`farmhand backup DEST`).

A plain `cp -r farmhand-data` of a running manager is not a backup. The SQLite database
lives in three files (`farmhand.sqlite3`, `-wal`, `-shm`) that change while they are
read: a copy can mix pages of different moments (a corrupt file) or leave out what sits
in the write-ahead log. And blobs copied *before* the database leave a copy whose
database names blobs uploaded in between, which the copy lacks.

So the order here is fixed, and it is the point of this module:

1. **The database first**, through SQLite's online backup API
   (`sqlite3.Connection.backup`, in one step): a consistent snapshot of one moment,
   whatever the manager's processes write meanwhile (in WAL mode they go on writing
   while it is read). The copy must pass `PRAGMA integrity_check`.
2. **Then the blobs that snapshot knows** (its `blobs` table and every `job_files`
   hash). Blobs are content-addressed and never change once placed, and garbage
   collection removes only blobs no job references, after their retention, so every
   blob a job of the snapshot uses is still in the store when it is copied. The
   exceptions: a job deleted with `purge` during the backup takes its blobs at once
   (reported as missing, the backup fails, the admin runs it again); and a blob no job
   used, collected after the snapshot, is dropped from the copy's `blobs` table too.
   Each blob is hashed as it is copied (its name is its hash): a file whose bytes do
   not match is reported and left out, never copied as if it were good.
3. **Then the rest**: task logs and the secrets (`admin-token`, `runner-token`,
   `session-key`), modes kept (the secrets are 0600), except that a log is never
   readable by others in the copy (0600, in 0700 folders), even one an earlier version
   wrote 0644.

The copied database holds password hashes, as the original does: it is created 0600
before a byte is written (its `-wal` and `-shm`, if SQLite makes them, take its mode).

Left out, on purpose: `blobs/tmp/` (uploads being staged and partial resumable uploads,
which are not blobs yet), `thumbnails/` (a cache, rebuilt on demand), `run/` (runtime
sockets) and the `.writelock` file. The copy is a data dir a manager opens as it is:
restoring is stopping the manager and starting it on the copy.

A database that is not SQLite (PostgreSQL) is not copied: `pg_dump` does that, and it
must run *before* the files are copied (`files_only`), for the reason of point 2.
Restoring such a copy is `pg_restore` of the dump, then the manager on the copy with
`--database-url` (without it the manager looks for SQLite in the copy, and refuses to
start on a farm's files without their database: `db.presence`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

from farmhand.manager.auth.sessions import KEY_FILE
from farmhand.manager.db.presence import RESTORE, damaged
from farmhand.shared.blobpaths import blob_path, iter_blobs
from farmhand.shared.hashing import CHUNK_SIZE, sha256_file

DATABASE_FILE = "farmhand.sqlite3"
"""Where the copy's database goes: where a manager started on the copy looks for it."""
SECRET_FILES = ("admin-token", "runner-token", KEY_FILE)
"""Copied if present. Without `session-key` every browser session would end at a restore;
the token files are how an admin finds their tokens again."""
BATCH = 500
"""Hashes per statement: SQLite allows only so many bound parameters in one query."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CROSS_DEVICE = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
"""Why `os.link` may refuse where a copy works: another filesystem, a filesystem
without hard links, too many links to one file."""


class BackupRefused(Exception):
    """The backup cannot start; nothing was written."""


class BackupFailed(Exception):
    """The backup stopped part-way; what was written is not a usable backup."""


class BlobProgress(Protocol):
    """Told how many bytes of blobs there are to copy, then of each chunk copied."""

    def start(self, blobs: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class _Quiet:
    def start(self, blobs: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


@dataclass
class BlobsCopied:
    """What happened to the blobs: counts, and the hashes that went wrong."""

    copied: int = 0
    linked: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    """Referenced by a job in the snapshot, but not in the store: the copy names them
    and lacks them."""
    corrupt: list[str] = field(default_factory=list)
    """In the store, but their bytes do not hash to their name (left out of the copy)."""
    dropped: list[str] = field(default_factory=list)
    """Rows of blobs no job referenced whose files were gone or corrupt (garbage
    collection removed them after the snapshot): removed from the copy's `blobs`
    table, so the copy never claims a blob it lacks."""


@dataclass
class BackupReport:
    dest: Path
    database_copied: bool
    """False for a database that is not SQLite (`files_only`): pg_dump's job."""
    jobs: int | None
    blobs: BlobsCopied
    files: list[str]
    """Everything copied besides the database and blobs, relative to `dest`."""
    seconds: float

    @property
    def ok(self) -> bool:
        """A complete backup: every blob it names is in it, and none was corrupt."""
        return not self.blobs.missing and not self.blobs.corrupt


def sqlite_database(database_url: str) -> Path | None:
    """The file of a SQLite URL; None for another database (PostgreSQL).

    Raises `BackupRefused` for an in-memory SQLite database: there is nothing on disk.
    """
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        return None
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise BackupRefused(f"the database {database_url!r} is not a file")
    return Path(url.database)


def hidden_password(database_url: str) -> str:
    """The URL as it may be shown: its password replaced by `***`."""
    return make_url(database_url).render_as_string(hide_password=True)


def check_destination(dest: Path, data_dir: Path) -> None:
    """Refuse a DEST that exists and holds anything, or that lies inside the data dir.

    A backup never merges into an older one (the result would be neither) and never
    lands inside what it copies (it would copy itself, and go when the data dir goes)."""
    if dest.exists() and not dest.is_dir():
        raise BackupRefused(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise BackupRefused(f"{dest} is not empty: a backup goes into a new or empty directory")
    source, target = data_dir.resolve(), dest.resolve()
    if target == source or source in target.parents:
        raise BackupRefused(f"{dest} is inside the data dir {data_dir}")


def _open_read_only(database: Path) -> sqlite3.Connection:
    """The live database, read-only: a backup never changes what it copies, and never
    creates an empty database where a path is wrong."""
    return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=60)


def check_source_database(database: Path) -> None:
    """Refuse, before anything is written, a path that holds no manager database."""
    if not database.is_file():
        raise BackupRefused(f"no manager database at {database}")
    try:
        live = _open_read_only(database)
        try:
            tables = {row[0] for row in live.execute("SELECT name FROM sqlite_master")}
        finally:
            live.close()
    except sqlite3.Error as error:
        if damaged(error):
            raise BackupRefused(_damaged(error, database)) from error
        raise BackupRefused(f"cannot read {database}: {error}") from error
    if not {"jobs", "blobs", "job_files"} <= tables:
        raise BackupRefused(f"{database} is not a farmhand manager's database")


def _damaged(error: sqlite3.Error, database: Path) -> str:
    return (
        f"the database {database} is damaged ({error}), so it cannot be backed up: "
        f"restore the data dir from an earlier backup ({RESTORE})"
    )


def snapshot_database(database: Path, target: Path) -> None:
    """Copy the live database into `target` with SQLite's online backup API, and check
    the copy.

    `pages=-1` copies every page in one step, inside one read transaction: the copy is
    the database at one moment, however many processes write meanwhile (WAL mode lets
    them). A copy page by page in several steps would restart whenever another
    connection writes, which on a busy farm could be forever.
    """
    live = _open_read_only(database)
    try:
        # Private before SQLite writes a page into it (it would create it 0644).
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        copy = sqlite3.connect(target)
        try:
            live.backup(copy, pages=-1)
            result = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        finally:
            copy.close()
    finally:
        live.close()
    if result != ["ok"]:
        raise BackupFailed(
            f"the copy of {database} fails SQLite's integrity check ({'; '.join(result[:5])}): "
            "the database itself may be damaged (check it with "
            f"sqlite3 {database} 'PRAGMA integrity_check'). Nothing else was copied."
        )


@dataclass(frozen=True)
class Snapshot:
    """What the copied database knows: its jobs, and the blobs it names."""

    jobs: int
    sizes: dict[str, int]
    """Every row of the `blobs` table: hash → size."""
    referenced: set[str]
    """Every hash a `job_files` row names (an input or an output of a job)."""

    @property
    def hashes(self) -> list[str]:
        return sorted(self.sizes.keys() | self.referenced)


def read_snapshot(database: Path) -> Snapshot:
    copy = sqlite3.connect(database)
    try:
        jobs = copy.execute("SELECT count(*) FROM jobs").fetchone()[0]
        sizes = dict(copy.execute("SELECT sha256, size FROM blobs"))
        referenced = {row[0] for row in copy.execute("SELECT DISTINCT sha256 FROM job_files")}
    finally:
        copy.close()
    return Snapshot(jobs=int(jobs), sizes=sizes, referenced=referenced)


_UNREFERENCED = "NOT EXISTS (SELECT 1 FROM job_files WHERE job_files.sha256 = blobs.sha256)"


def drop_blob_rows(database: Path, hashes: Iterable[str]) -> list[str]:
    """Delete rows of blobs that no job references from the copy; the hashes deleted.

    For blobs the copy lacks (garbage collection removed them after the snapshot, or
    they were corrupt): a manager that believes it holds a blob tells clients not to
    upload it again, and a job naming it would then have no file."""
    ordered = sorted(hashes)
    dropped: list[str] = []
    copy = sqlite3.connect(database)
    try:
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master")}
        with copy:
            for start in range(0, len(ordered), BATCH):
                chunk = ordered[start : start + BATCH]
                where = f"sha256 IN ({','.join('?' * len(chunk))}) AND {_UNREFERENCED}"
                found = [
                    row[0]
                    for row in copy.execute(f"SELECT sha256 FROM blobs WHERE {where}", chunk)  # noqa: S608 (placeholders)
                ]
                dropped += found
                copy.execute(f"DELETE FROM blobs WHERE {where}", chunk)  # noqa: S608
                if found and "blob_uploads" in tables:
                    # Foreign keys are off on this connection: no cascade to rely on.
                    marks = ",".join("?" * len(found))
                    copy.execute(f"DELETE FROM blob_uploads WHERE sha256 IN ({marks})", found)  # noqa: S608
    finally:
        copy.close()
    return sorted(dropped)


class _Corrupt(Exception):
    pass


def _copy_verified(source: Path, target: Path, sha256: str, advance: Callable[[int], None]) -> int:
    """Copy one blob, hashing it on the way; its size. The bytes go to a temporary name
    and are renamed once they hash right, so a file named for a hash always holds it
    (also after a crash). The file keeps the blob's mode and times: `rsync -a` of one
    backup onto an older one then sends only new blobs."""
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as reader:
            info = os.fstat(reader.fileno())
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(CHUNK_SIZE):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
                    advance(len(chunk))
                writer.flush()
                os.fsync(writer.fileno())
        if digest.hexdigest() != sha256:
            raise _Corrupt(sha256)
        os.chmod(partial, stat.S_IMODE(info.st_mode))
        os.utime(partial, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return size


def copy_blobs(
    store: Path,
    dest_store: Path,
    hashes: Iterable[str],
    *,
    link: bool = False,
    progress: BlobProgress | None = None,
    sizes: dict[str, int] | None = None,
) -> BlobsCopied:
    """Copy blobs from `store` (`<data-dir>/blobs`) into `dest_store`, verifying each.

    A hash that is not in the store is reported as missing (the caller decides whether
    that matters); one whose bytes do not match is reported as corrupt and not copied.
    With `link`, a verified blob is hard-linked instead of copied (no space, but the
    same bytes on the same disk); where linking is impossible (another filesystem) the
    rest are copied.
    """
    progress = progress or _Quiet()
    wanted = sorted(hashes)
    sizes = sizes or {}
    progress.start(len(wanted), sum(sizes.get(sha, 0) for sha in wanted))
    result = BlobsCopied()
    for sha256 in wanted:
        if not _SHA256.fullmatch(sha256):  # never a path: a row naming `../x` is damage
            result.corrupt.append(sha256)
            continue
        source, target = blob_path(store, sha256), blob_path(dest_store, sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if link:
                if sha256_file(source, progress.advance) != sha256:
                    raise _Corrupt(sha256)
                try:
                    os.link(source, target)
                except OSError as error:
                    if error.errno not in _CROSS_DEVICE:
                        raise
                    link = False  # and copy this one and the rest (already counted)
                    result.bytes += _copy_verified(source, target, sha256, lambda _n: None)
                    result.copied += 1
                else:
                    result.bytes += source.stat().st_size
                    result.linked += 1
            else:
                result.bytes += _copy_verified(source, target, sha256, progress.advance)
                result.copied += 1
        except FileNotFoundError:
            if not source.exists():
                result.missing.append(sha256)
            else:
                raise
        except _Corrupt:
            result.corrupt.append(sha256)
    return result


def store_hashes(store: Path) -> dict[str, int]:
    """Every blob file in a store (hash → size), for a backup without the database."""
    return {sha: info.st_size for sha, _path, info in iter_blobs(store)}


def _copy_file(source: Path, target: Path, *, private: bool = False) -> None:
    """Copy one file, keeping its mode (`private`: without the bits for others) and
    times; created 0600 so a secret is never readable by others, not even while it is
    written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as writer, source.open("rb") as reader:
        while chunk := reader.read(CHUNK_SIZE):
            writer.write(chunk)
    info = source.stat()
    mode = stat.S_IMODE(info.st_mode)
    os.chmod(target, mode & 0o700 if private else mode)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


def _private_folders(dest: Path, relative: Path) -> None:
    """Make each missing folder of `relative` under `dest`, 0700."""
    folder = dest
    for part in relative.parts:
        folder = folder / part
        folder.mkdir(mode=0o700, exist_ok=True)


def copy_logs_and_secrets(data_dir: Path, dest: Path) -> list[str]:
    """Copy the task logs and the secret files; their paths relative to `dest`.

    Logs are copied as they are at that moment: the manager only appends to them, so a
    log copied mid-write lacks its last lines at worst. A log that vanishes meanwhile
    (its job deleted) is skipped.
    """
    copied: list[str] = []
    logs = data_dir / "logs"
    if logs.is_dir():
        for folder, _dirs, names in os.walk(logs):
            for name in sorted(names):
                source = Path(folder) / name
                if source.is_symlink() or not source.is_file():
                    continue
                relative = source.relative_to(data_dir)
                _private_folders(dest, relative.parent)
                try:
                    _copy_file(source, dest / relative, private=True)
                except FileNotFoundError:
                    continue
                copied.append(relative.as_posix())
    for name in SECRET_FILES:
        source = data_dir / name
        if source.is_file():
            _copy_file(source, dest / name)
            copied.append(name)
    return copied


def _make_dest(dest: Path, data_dir: Path) -> None:
    """Create DEST with the data dir's own mode (a restore looks like the original)."""
    if not dest.exists():
        dest.mkdir(parents=True, mode=0o700)
        os.chmod(dest, stat.S_IMODE(data_dir.stat().st_mode))


def backup(
    data_dir: Path,
    database_url: str,
    dest: Path,
    *,
    link: bool = False,
    files_only: bool = False,
    progress: BlobProgress | None = None,
) -> BackupReport:
    """Back up a manager's data dir into `dest` (module docstring: what, and in which order).

    `database_url` is the manager's resolved URL (`ManagerSettings.resolved_database_url`).
    `files_only` is for a database that is not SQLite, dumped with pg_dump beforehand:
    then every blob in the store is copied, since there is no snapshot to say which.
    Raises `BackupRefused` (nothing written) or `BackupFailed` (stopped part-way); a
    backup with missing or corrupt blobs is still written in full and says so
    (`BackupReport.ok`).
    """
    began = time.monotonic()
    database = sqlite_database(database_url)
    if database is not None and files_only:
        raise BackupRefused(
            "--files-only is for a database that is not SQLite (PostgreSQL): "
            "the SQLite database is backed up with the files"
        )
    if database is None and not files_only:
        raise BackupRefused(
            f"the database is not SQLite ({hidden_password(database_url)}), and farmhand "
            "backup does not copy it. Dump it with pg_dump FIRST, then run farmhand backup "
            "with --files-only to copy blobs, logs and tokens: in that order every blob "
            "the dump names is in the copy. Files copied before the dump could miss blobs "
            "uploaded in between that the dump names."
        )
    if not data_dir.is_dir():
        raise BackupRefused(f"no data dir at {data_dir}")
    check_destination(dest, data_dir)
    if database is not None:
        check_source_database(database)
    _make_dest(dest, data_dir)
    store, dest_store = data_dir / "blobs", dest / "blobs"
    dest_store.mkdir(parents=True, exist_ok=True)
    if database is not None:
        copy_db = dest / DATABASE_FILE
        try:
            snapshot_database(database, copy_db)  # first: see the module docstring
            snapshot = read_snapshot(copy_db)
        except sqlite3.Error as error:  # a full disk, an unreadable page, …
            if damaged(error):
                raise BackupFailed(_damaged(error, database)) from error
            raise BackupFailed(f"copying the database failed: {error}") from error
        blobs = copy_blobs(
            store, dest_store, snapshot.hashes, link=link, progress=progress, sizes=snapshot.sizes
        )
        unreferenced_gone = [
            sha for sha in blobs.missing + blobs.corrupt if sha not in snapshot.referenced
        ]
        blobs.missing = [sha for sha in blobs.missing if sha in snapshot.referenced]
        try:
            blobs.dropped = drop_blob_rows(copy_db, unreferenced_gone)
        except sqlite3.Error as error:
            raise BackupFailed(f"updating the copy's database failed: {error}") from error
        jobs: int | None = snapshot.jobs
    else:
        sizes = store_hashes(store)
        blobs = copy_blobs(store, dest_store, sizes, link=link, progress=progress, sizes=sizes)
        jobs = None
    files = copy_logs_and_secrets(data_dir, dest)
    return BackupReport(
        dest=dest,
        database_copied=database is not None,
        jobs=jobs,
        blobs=blobs,
        files=files,
        seconds=time.monotonic() - began,
    )
