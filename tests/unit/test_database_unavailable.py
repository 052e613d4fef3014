"""What counts as the database being unavailable, and what the reaper's clock makes of it.

`db.presence.unavailable` decides between a 503 that restarts the reaper's clock (the
database could not be used: nobody could be heard) and anything else (a 500 with its
traceback: a bug, or a 400/507 of its own). It is fed the drivers' real errors here.
The clock logs an outage once when it starts and once when it ends, and tells the
sibling processes of a `--processes N` manager, as it does for a full disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from farmhand.localfarm import free_port
from farmhand.manager.clock import utcnow
from farmhand.manager.db.presence import database_reason, unavailable
from farmhand.manager.scheduling.reaper import ReaperClock
from farmhand.manager.siblings import Siblings
from tests.unit.test_reaper_clock import _until
from tests.unit.test_siblings import directory, run_in_own_loop

__all__ = ["directory"]  # the fixture, used by name


def _error_of(url: str, statement: str, **connect_args: object) -> DBAPIError:
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    except DBAPIError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{statement} did not fail")


def test_sqlite_locked_past_its_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    database = tmp_path / "farm.sqlite3"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        error = _error_of(f"sqlite:///{database}", "INSERT INTO t VALUES (1)", timeout=0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "database is locked" in str(error)
    assert unavailable(error)


def test_postgres_refusing_connections_is_unavailable_without_its_password() -> None:
    url = f"postgresql+psycopg://farmhand:pw-s3cret@127.0.0.1:{free_port()}/farm"
    error = _error_of(url, "SELECT 1")
    assert unavailable(error)
    reason = database_reason(error, url)
    assert "Connection refused" in reason and "\n" not in reason
    assert "pw-s3cret" not in reason


@pytest.mark.parametrize(
    "statement",
    ["SELECT * FROM no_such_table", "INSERT INTO t VALUES (1)"],
    ids=["statement-wrong", "constraint"],
)
def test_a_statement_sqlite_refuses_is_not_an_outage(tmp_path: Path, statement: str) -> None:
    """ "no such table" is an OperationalError too, with SQLITE_ERROR: a bug, a 500."""
    database = tmp_path / "farm.sqlite3"
    with sqlite3.connect(database) as setup:
        setup.execute("CREATE TABLE t (x UNIQUE)")
        setup.execute("INSERT INTO t VALUES (1)")
    assert not unavailable(_error_of(f"sqlite:///{database}", statement))


def test_a_damaged_sqlite_file_is_not_an_outage(tmp_path: Path) -> None:
    """Damage is said at start (`presence.damaged`); waiting mends nothing."""
    database = tmp_path / "farm.sqlite3"
    database.write_bytes(b"not a database at all" * 500)
    assert not unavailable(_error_of(f"sqlite:///{database}", "SELECT * FROM t"))
    assert not unavailable(OSError(5, "Input/output error"))


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    started = utcnow() - timedelta(minutes=5)
    clock = ReaperClock(started)
    with structlog.testing.capture_logs() as events:
        clock.database_answered(utcnow())  # no outage: nothing to say
        first = utcnow() - timedelta(seconds=30)
        for second in range(30):
            clock.database_unavailable(first + timedelta(seconds=second), "Connection refused")
        assert clock.starts_at == first + timedelta(seconds=29)
        clock.database_answered(first + timedelta(seconds=31))
        clock.database_answered(first + timedelta(seconds=32))
    assert [(e["log_level"], e["event"]) for e in events] == [
        (
            "error",
            "database unavailable: requests are answered 503 until it is back, and workers "
            "are not counted silent meanwhile",
        ),
        ("warning", "database available again"),
    ], events
    assert events[0]["error"] == "Connection refused"
    assert events[1]["unavailable_for"] == "31 s"


def test_an_outage_in_one_process_moves_the_clock_of_its_siblings(directory: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = utcnow() - timedelta(minutes=5)
        here, there = ReaperClock(started), ReaperClock(started)
        first, second = Siblings(directory), Siblings(directory)
        here.share_with(first)
        there.share_with(second)
        first.start(loop)
        second.start(loop)
        try:
            refused = utcnow() - timedelta(seconds=1)
            here.database_unavailable(refused, "Connection refused")
            await _until(lambda: there.starts_at == refused)
        finally:
            first.close()
            second.close()

    run_in_own_loop(scenario)


class _AwayThenBack:
    """A database whose read transactions fail with a real outage error until `back`
    (the stream's owner lookup only reads, ee38c7f)."""

    def __init__(self, error: DBAPIError) -> None:
        self.error = error
        self.back = False

    def read(self) -> object:
        if not self.back:
            raise self.error
        return _OwnerSession()


class _OwnerSession:
    def __enter__(self) -> _OwnerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get(self, model: object, job_id: int) -> object:
        return type("JobRow", (), {"owner_id": 7})()


def test_a_users_live_stream_outlives_an_outage() -> None:
    """A user's event stream looks up whose job an event is about; during an outage the
    lookup failed, and the stream died with a traceback. The event is not shown, the
    stream goes on, and once the database is back the same job is looked up again."""
    from types import SimpleNamespace

    from farmhand.manager.api.deps import Caller
    from farmhand.manager.api.events_stream import Visibility
    from farmhand.manager.events import FarmEvent

    url = f"postgresql+psycopg://farmhand:pw@127.0.0.1:{free_port()}/farm"
    database = _AwayThenBack(_error_of(url, "SELECT 1"))
    visibility = Visibility(SimpleNamespace(db=database), Caller(7, "ann", "user"))  # type: ignore[arg-type]
    event = FarmEvent(kind="job", id=3, job_id=3)
    assert asyncio.run(visibility.allows(event)) is False
    database.back = True
    assert asyncio.run(visibility.allows(event)) is True, "not remembered as someone else's"


def test_garbage_collection_during_an_outage_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from farmhand.manager.storage import gc

    url = f"postgresql+psycopg://farmhand:pw@127.0.0.1:{free_port()}/farm"
    error = _error_of(url, "SELECT 1")
    passes: list[int] = []

    def collect(*_: object) -> None:
        passes.append(1)
        raise error

    monkeypatch.setattr(gc, "collect_garbage", collect)
    context = SimpleNamespace(
        settings=SimpleNamespace(gc_interval=0.01), db=SimpleNamespace(check_file=lambda: None)
    )

    async def two_passes() -> None:
        task = asyncio.create_task(gc.gc_loop(context))  # type: ignore[arg-type]
        while len(passes) < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(two_passes())
    said = [entry for entry in logs if "garbage collection" in entry["event"]]
    assert said and all(entry["log_level"] == "warning" for entry in said), said
    assert all("exc_info" not in entry for entry in said), "no traceback for an outage"
    assert "database is unavailable" in said[0]["event"]


def test_a_short_password_is_masked_where_it_stands_not_in_every_word() -> None:
    """A password "p" masked every "p" of the reason ("***ort 1 failed ... acce***ting");
    it is masked where it stands alone, as in a URL or a conninfo field."""
    error = RuntimeError(
        'connection to server at "127.0.0.1", port 1 failed: Connection refused. '
        "Is the server running and accepting TCP/IP connections? (postgresql://u:p@x/db)"
    )
    reason = database_reason(error, "postgresql+psycopg://u:p@127.0.0.1:1/db")
    assert "port 1 failed" in reason and "accepting" in reason
    assert "u:***@x" in reason


def test_an_outage_is_said_to_have_lasted_from_when_the_refused_write_began_waiting(
    tmp_path: Path,
) -> None:
    """A 75 s SQLite lock: the first write waited the whole busy timeout (60 s) before it
    was refused, and the database answered 15 s later. The log said `unavailable_for='14.7
    s'`, counted from the refusal; it lasted 75 s."""
    database = tmp_path / "farm.sqlite3"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        busy = _error_of(f"sqlite:///{database}", "BEGIN IMMEDIATE", timeout=0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    clock = ReaperClock(utcnow() - timedelta(minutes=5))
    locked = utcnow() - timedelta(seconds=80)
    with structlog.testing.capture_logs() as events:
        clock.database_waited(locked, locked + timedelta(seconds=60), busy)  # from Database
        clock.database_unavailable(locked + timedelta(seconds=60), "database is locked")  # 503
        clock.database_answered(locked + timedelta(seconds=75))
    said = {e["event"].split(":")[0]: e for e in events}
    assert len(events) == 2, events
    assert said["database unavailable"]["waited"] == "1 min", events
    assert said["database available again"]["unavailable_for"] == "1 min 15 s", events
    assert clock.starts_at == locked + timedelta(seconds=60)
