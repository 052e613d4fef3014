"""Engine and transactions.

Every change to the farm's state happens inside `transaction()`: one database
transaction, committed as a whole or not at all. On SQLite the transaction starts with
`BEGIN IMMEDIATE` so two writers queue up on the database lock at the start instead of
one failing half-way ("database is locked" on lock upgrade), which is what makes the
compare-and-set claim safe without any process-wide lock; PostgreSQL gets the same
guarantees from its row locks.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from farmhand.manager.db.groupcommit import GroupCommit

T = TypeVar("T")


def make_engine(url: str, *, for_writes: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60},
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
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # Readers take no lock up front: in WAL mode they see a consistent snapshot
            # while one writer works, so lookups never queue behind claims.
            connection.exec_driver_sql("BEGIN IMMEDIATE" if for_writes else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


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


def _sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL (None for memory or other engines)."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class Database:
    """The engine plus a session factory; one per manager app."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if url.startswith("sqlite") else nullcontext()
        )
        database_file = _sqlite_file(url)
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

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        # SQLite lets one writer in at a time and makes the others *sleep* in its busy
        # handler (up to 100 ms a turn), which under load costs far more than the writes.
        # Queuing this process's writers on a lock first hands the database over at
        # once. Correctness does not depend on it: between processes the database lock
        # still decides, so several managers may share one database file.
        with (
            self._write_lock,
            self._file_lock or nullcontext(),
            self._sessions() as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: a consistent snapshot that blocks no writer."""
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
