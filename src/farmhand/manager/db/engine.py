"""Engine and transactions.

Every change to the farm's state happens inside `transaction()`: one database
transaction, committed as a whole or not at all. On SQLite the transaction starts with
`BEGIN IMMEDIATE` so two writers queue up on the database lock at the start instead of
one failing half-way ("database is locked" on lock upgrade), which is what makes the
compare-and-set claim safe without any process-wide lock; PostgreSQL gets the same
guarantees from its row locks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
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


class Database:
    """The engine plus a session factory; one per manager app."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if url.startswith("sqlite") else nullcontext()
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
        with self._write_lock, self._sessions() as session, session.begin():
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
        self.engine.dispose()
        self.read_engine.dispose()
