"""Engine and transactions.

Every change to the farm's state happens inside `transaction()`: one database
transaction, committed as a whole or not at all. On SQLite the transaction starts with
`BEGIN IMMEDIATE` so two writers queue up on the database lock at the start instead of
one failing half-way ("database is locked" on lock upgrade), which is what makes the
compare-and-set claim safe without any process-wide lock; PostgreSQL gets the same
guarantees from its row locks.

A SQLite database holds password hashes, e-mail addresses and every job's name: its
files are the manager's alone (0600, `private_sqlite_files`), like the tokens and the
session key.

A SQLite file deleted (or replaced by another) while the manager runs goes on working
for the manager, which still has it open, until the next start finds it gone: every job
accepted meanwhile would be lost. So the manager checks that the path still leads to the
file it opened (`Database.check_file`, one `stat` each reaper pass, every couple of
seconds), logs an error when it does not, and from then on answers every request that
needs the database with a 503 (`DatabaseGone`) instead of confirming work that cannot
survive a restart, or listing jobs that will not be there after it.

A write may wait for the database: for this process's other writers, for its sibling
processes' (`FileLock`), and on SQLite for whoever else holds the file's lock, up to the
busy timeout (`DATABASE_BUSY_TIMEOUT`, then "database is locked": a 503). What it
waited is time nothing could be recorded, heartbeats included, though the workers were
heard: `transaction` begins the database's transaction at once, so the wait is over
when the block starts, and tells its listeners (`on_wait`: the reaper's clock) of every
wait longer than `WAIT_NOTED` and every one that failed, with when it began.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException

from farmhand.manager.clock import utcnow
from farmhand.manager.db.groupcommit import GroupCommit
from farmhand.shared.timeouts import DATABASE_BUSY_TIMEOUT

log = structlog.get_logger(__name__)
T = TypeVar("T")

POSTGRESQL_CONNECT_TIMEOUT = 10
"""Seconds a new PostgreSQL connection may take (libpq's `connect_timeout`), unless the
URL sets its own."""

SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database, which hold its pages too."""

WAIT_NOTED = 1.0
"""Seconds a write must wait for the database for `Database.on_wait` listeners to be
told: shorter waits are everyday contention, and cost a worker's heartbeat timeout at
most that much."""

WaitListener = Callable[[datetime, datetime, BaseException | None], None]
"""Told (since, until, error) of a write's wait for the database: when it began, when
it ended, and the error it ended in (None: it went through)."""


def make_engine(url: str, *, for_writes: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": DATABASE_BUSY_TIMEOUT},
            pool_size=8,
            max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={round(DATABASE_BUSY_TIMEOUT * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # Readers take no lock up front: in WAL mode they see a consistent snapshot
            # while one writer works, so lookups never queue behind claims.
            connection.exec_driver_sql("BEGIN IMMEDIATE" if for_writes else "BEGIN")

        return engine
    connect_args: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql" and "connect_timeout" not in url:
        # Without it, a server that vanished without refusing (a network blackhole, a
        # host down) holds every request's connection attempt for minutes, where a
        # refusal is a 503 at once (`presence.unavailable`).
        connect_args["connect_timeout"] = POSTGRESQL_CONNECT_TIMEOUT
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )


class FileLock:
    """An exclusive `flock` on a file, held by one thread of this process at a time.

    Several processes of one manager (`--processes`) write to one SQLite file. SQLite
    makes a writer that finds the database locked *sleep* and retry (1, 2, 5 … 100 ms),
    which under load costs more than the writes; a writer queued on `flock` is woken by
    the kernel the moment the lock is free. As with the in-process lock, correctness does
    not depend on it: `BEGIN IMMEDIATE` still decides.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._opened = threading.Lock()

    def __enter__(self) -> None:
        if self._fd is None:
            with self._opened:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL (None for memory or other engines)."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def private_sqlite_files(database: Path) -> None:
    """Make a SQLite database's files readable by this account only (0600).

    A missing database file is created empty, 0600, before SQLite opens it: SQLite
    creates a database with the process's umask (0644 under the usual 022), and gives
    its `-wal` and `-shm` the database file's mode, so all three start private. Files
    left more open by earlier versions are tightened; one this account does not own
    (chmod refuses) is left as it is, with a warning. A missing folder is left for
    SQLite to report as it always has.
    """
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError):
        pass
    else:
        os.close(fd)
    for path in (database, *(Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("cannot make a database file private", path=str(path), error=str(error))


GONE_DETAIL = (
    "the manager's database file was deleted or replaced while the manager runs: it "
    "accepts nothing more, since it would be lost at the next start. An administrator "
    "must restore the database and restart the manager (its log names the file)"
)


class DatabaseGone(HTTPException):
    """The SQLite file is gone (`Database.check_file`): 503, the reason in `detail`
    (the file's path only goes to the log)."""

    def __init__(self) -> None:
        super().__init__(503, detail=GONE_DETAIL)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None if there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


class Database:
    """The engine plus a session factory; one per manager app."""

    def __init__(self, url: str) -> None:
        self.url = url
        database_file = sqlite_file(url)
        if database_file is not None:
            private_sqlite_files(database_file)  # before SQLite first creates it
        self.database_file = database_file
        self._opened = _identity(database_file) if database_file is not None else None
        """The file SQLite opens (made by `private_sqlite_files` if it was missing)."""
        self.gone: str | None = None
        """How the database file stopped being the one opened (`check_file`): while it
        is set, nothing is read or written."""
        self.engine = make_engine(url)
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if url.startswith("sqlite") else nullcontext()
        )
        self._file_lock: FileLock | None = (
            FileLock(database_file.with_name(database_file.name + ".writelock"))
            if database_file is not None
            else None
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_engine = (
            make_engine(url, for_writes=False) if url.startswith("sqlite") else self.engine
        )
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self.group_commit = GroupCommit(self)
        self._wait_listeners: list[WaitListener] = []

    def on_wait(self, listener: WaitListener) -> None:
        """Tell `listener` of writes' long or failed waits for the database (`WAIT_NOTED`),
        from the thread that waited."""
        self._wait_listeners.append(listener)

    def check_file(self) -> str | None:
        """Whether the path still leads to the SQLite file this database opened: None if
        so (or with no file to watch), else why not. One `stat`.

        Once it does not, it stays so until the manager restarts, and every `transaction`
        and `read` raises `DatabaseGone`: connections opened since may have created an
        empty database at the path, so no connection can be trusted to be on the farm's
        file, even if that file is put back. The error is logged once."""
        if self.gone is not None or self.database_file is None or self._opened is None:
            return self.gone
        try:
            now = _identity(self.database_file)
        except OSError:
            return None  # cannot tell (a folder made unreadable): the next pass may
        if now == self._opened:
            return None
        self.gone = "deleted" if now is None else "replaced by another file"
        log.error(
            "the database file is gone while the manager runs: every request that needs "
            "the database is refused (503) until the manager restarts, since changes would "
            "be lost at the next start. Stop the manager and restore the database from a "
            "backup (docs/STORAGE.md, 'Backup and restore')",
            path=str(self.database_file),
            was=self.gone,
        )
        return self.gone

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        if self.gone is not None:
            raise DatabaseGone()
        # SQLite lets one writer in at a time and makes the others *sleep* in its busy
        # handler (up to 100 ms a turn), which under load costs far more than the writes.
        # Queuing this process's writers on a lock first hands the database over at
        # once. Correctness does not depend on it: between processes the database lock
        # still decides, so several managers may share one database file.
        since, asked = utcnow(), time.monotonic()
        with ExitStack() as stack:
            try:
                stack.enter_context(self._write_lock)
                stack.enter_context(self._file_lock or nullcontext())
                session = stack.enter_context(self._sessions())
                stack.enter_context(session.begin())
                # BEGIN (IMMEDIATE, on SQLite) now, not at the block's first statement:
                # the wait for the database ends here, and is measured.
                session.connection()
            except Exception as error:
                self._waited(since, asked, error)
                raise
            self._waited(since, asked, None)
            yield session

    def _waited(self, since: datetime, asked: float, error: BaseException | None) -> None:
        waited = time.monotonic() - asked
        if error is None and waited < WAIT_NOTED:
            return
        until = since + timedelta(seconds=waited)
        for listener in self._wait_listeners:
            listener(since, until, error)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: a consistent snapshot that blocks no writer."""
        if self.gone is not None:
            raise DatabaseGone()
        with self._read_sessions() as session, session.begin():
            yield session

    async def batched(self, operation: Callable[[Session], T]) -> T:
        """Run `operation` in a transaction shared with other callers' (`GroupCommit`).

        For the runner hot path: small, frequent writes. `operation` must have no side
        effects besides the session (it may run twice: see `GroupCommit`).
        """
        return await self.group_commit.run(operation)

    def dispose(self) -> None:
        self.group_commit.stop()
        if self._file_lock is not None:
            self._file_lock.close()
        self.engine.dispose()
        self.read_engine.dispose()
