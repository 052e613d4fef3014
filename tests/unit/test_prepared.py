"""Prepared statements (`db/prepared.py`): the runner hot path's statements run on the
`sqlite3` connection must read and write exactly what SQLAlchemy would have.

A real SQLite file built by the migrations; each check compares a prepared run with
SQLAlchemy's own run of the same statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import OperationalError

from farmhand.manager.api.errors import storage_fault
from farmhand.manager.db.engine import Database
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import Blob, Job, Task, User, Worker
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.db.statements import one_of

WHEN = datetime(2026, 11, 25, 12, 30, 15, 250_000, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'farm.sqlite3'}")
    upgrade(database.engine)
    with database.transaction() as session:
        user = User(name="ana", created_at=WHEN)
        session.add(user)
        session.flush()
        session.add(
            Worker(
                name="box",
                secret_hash="s" * 64,
                registered_at=WHEN,
                last_heartbeat=WHEN,
                asleep=True,
                capabilities={"types": ["render"], "tags": ["gpu"]},
            )
        )
        job = Job(
            owner_id=user.id,
            name="shot",
            settings={"samples": 4, "max_workers": None},
            main_file="shot.blend",
            created_at=WHEN,
        )
        session.add(job)
        session.flush()
        session.add_all(
            Task(job_id=job.id, index=index, frames=[index, index + 1], status=status)
            for index, status in enumerate(["queued", "queued", "active", "completed"])
        )
    yield database
    database.dispose()


WORKER_COLUMNS = select(
    Worker.id, Worker.name, Worker.asleep, Worker.capabilities, Worker.last_heartbeat
).where(Worker.name == bindparam("name"))


def test_rows_come_back_as_sqlalchemy_reads_them(db: Database) -> None:
    with db.read() as session:
        connection = session.connection()
        expected = connection.execute(WORKER_COLUMNS, {"name": "box"}).one()
        [row] = Prepared(WORKER_COLUMNS).all(connection, {"name": "box"})
    assert tuple(row) == tuple(expected)
    # JSON decoded, a boolean not an int, an aware UTC datetime: the types' conversions.
    assert row.capabilities == {"types": ["render"], "tags": ["gpu"]}
    assert row.asleep is True
    assert row.last_heartbeat == WHEN and row.last_heartbeat.tzinfo is not None


def test_values_are_written_as_sqlalchemy_writes_them(db: Database) -> None:
    """An aware datetime in another zone is stored as its UTC instant, as SQLAlchemy
    stores it: `sqlite3` on its own would store the text with its offset, which sorts and
    compares wrongly against every other timestamp."""
    touch = Prepared(
        update(Worker)
        .where(Worker.name == bindparam("name"))
        .values(last_heartbeat=bindparam("now"), capabilities=bindparam("capabilities"))
    )
    later = (WHEN + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=2)))
    with db.transaction() as session:
        changed = touch.execute(
            session.connection(), {"name": "box", "now": later, "capabilities": {"tags": []}}
        )
    assert changed == 1
    with db.read() as session:
        row = session.execute(WORKER_COLUMNS, {"name": "box"}).one()
        stored = session.connection().exec_driver_sql("SELECT last_heartbeat FROM workers").one()
    assert row.last_heartbeat == WHEN + timedelta(minutes=5)
    assert row.capabilities == {"tags": []}
    assert stored[0] == "2026-11-25 12:35:15.250000"


def test_none_is_converted_by_the_type_as_sqlalchemy_does(db: Database) -> None:
    """A JSON column without `none_as_null` stores Python's None as JSON `null`, not as
    SQL NULL: a prepared run must give None to the type's conversion too."""
    untile = update(Task).where(Task.index == bindparam("at")).values(tile=bindparam("no_tile"))
    with db.transaction() as session:
        session.execute(untile, {"at": 0, "no_tile": None})
        Prepared(untile).execute(session.connection(), {"at": 1, "no_tile": None})
    with db.read() as session:
        stored = session.connection().exec_driver_sql(
            'SELECT tile FROM tasks WHERE "index" IN (0, 1) ORDER BY "index"'
        )
        assert [tile for (tile,) in stored] == ["null", "null"]


def test_update_returning_changes_the_rows_it_returns(db: Database) -> None:
    claim = Prepared(
        update(Task)
        .where(one_of(Task.status, ["queued"]), Task.index == bindparam("index"))
        .values(status="active", started_at=bindparam("now"))
        .returning(Task.id, Task.frames, Task.started_at)
    )
    with db.transaction() as session:
        first = claim.first(session.connection(), {"index": 1, "now": WHEN})
        again = claim.first(session.connection(), {"index": 1, "now": WHEN})
    assert first is not None and again is None  # a compare-and-set: only once
    assert first.frames == [1, 2] and first.started_at == WHEN
    with db.read() as session:
        rows = session.execute(select(Task.index, Task.status))
        statuses = {index: status for index, status in rows}
    assert statuses == {0: "queued", 1: "active", 2: "active", 3: "completed"}


def test_values_given_when_the_statement_was_built_are_bound(db: Database) -> None:
    """`one_of` binds its values once, as literals; a prepared run must send them."""
    unfinished = Prepared(
        select(Task.index)
        .where(Task.job_id == bindparam("job"), one_of(Task.status, ["queued", "active"]))
        .order_by(Task.index)
    )
    with db.read() as session:
        assert unfinished.scalars(session.connection(), {"job": 1}) == [0, 1, 2]
        assert unfinished.scalar(session.connection(), {"job": 2}) is None


def test_a_missing_parameter_is_an_error_not_a_null(db: Database) -> None:
    with db.read() as session, pytest.raises(KeyError, match="name"):
        Prepared(WORKER_COLUMNS).all(session.connection(), {})


def test_statements_sqlalchemy_renders_at_each_run_are_refused(db: Database) -> None:
    """An expanding IN is rendered anew for each run, and a column default made by a
    function is computed by SQLAlchemy at each run: a prepared run would do neither."""
    expanding = Prepared(select(Task.id).where(Task.id.in_(bindparam("ids", expanding=True))))
    defaulted = Prepared(  # `capabilities` has `default=dict`
        insert(Worker).values(name="x", secret_hash="t" * 64, registered_at=bindparam("now"))
    )
    with db.transaction() as session:
        with pytest.raises(ValueError, match="rendered at each execution"):
            expanding.all(session.connection(), {"ids": [1]})
        with pytest.raises(ValueError, match="defaults computed at each execution"):
            defaulted.execute(session.connection(), {"now": WHEN})


def test_an_insert_sets_the_columns_it_was_prepared_for(db: Database) -> None:
    """An `INSERT` without `values()` takes its columns from the parameters in
    SQLAlchemy; prepared, it is told them once, and refuses parameters that differ
    rather than insert other columns than SQLAlchemy would have."""
    add = Prepared(
        insert(Blob).returning(Blob.sha256, Blob.created_at),
        columns=("sha256", "size", "created_at"),
    )
    with db.transaction() as session:
        row = add.first(session.connection(), {"sha256": "a" * 64, "size": 7, "created_at": WHEN})
        with pytest.raises(ValueError, match="given"):
            add.execute(session.connection(), {"sha256": "b" * 64, "size": 7})
    assert row is not None and row.created_at == WHEN
    with db.read() as session:
        blob = session.get(Blob, "a" * 64)
        assert blob is not None and (blob.size, blob.created_at) == (7, WHEN)


def test_a_database_refusal_is_raised_as_sqlalchemy_raises_it(db: Database) -> None:
    """The manager answers a read-only or full database with a 507 and a busy one with a
    503 (`api/errors.py`), by SQLAlchemy's error types: a prepared statement's refusal
    must be one of them, not a bare `sqlite3` error that would be a 500."""
    rename = Prepared(update(Worker).values(name=bindparam("new_name")))
    with db.transaction() as session:
        connection = session.connection()
        connection.exec_driver_sql("PRAGMA query_only=1")
        try:
            with pytest.raises(OperationalError) as raised:
                rename.execute(connection, {"new_name": "renamed"})
        finally:
            connection.exec_driver_sql("PRAGMA query_only=0")
    assert storage_fault(raised.value) is not None
    with db.read() as session:
        assert session.scalar(select(Worker.name)) == "box"


def test_it_runs_on_the_write_and_the_read_engine_alike(db: Database) -> None:
    """A database has an engine for writes and one for reads, each with its dialect: a
    statement used on both is compiled once for each, not again at every switch."""
    prepared = Prepared(WORKER_COLUMNS)
    for _ in range(3):
        with db.transaction() as session:
            assert prepared.first(session.connection(), {"name": "box"}) is not None
        with db.read() as session:
            assert prepared.first(session.connection(), {"name": "box"}) is not None
    assert len(prepared._compiled) == 2


def test_outside_a_transaction_it_refuses_to_run(db: Database) -> None:
    """Run on a connection that has not begun, a write would commit on its own, and a
    rollback would not undo it."""
    rename = Prepared(update(Worker).values(name=bindparam("new_name")))
    with db.engine.connect() as connection, pytest.raises(RuntimeError, match="transaction"):
        rename.execute(connection, {"new_name": "renamed"})
