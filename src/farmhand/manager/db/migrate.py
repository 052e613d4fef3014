"""Bring the schema to the newest revision at manager start.

Run on every start: a fresh database gets every table, an older one gets the
migrations it lacks, and an up-to-date one costs a single query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


MIGRATION_LOCK = 0x6661726D68616E64  # "farmhand"
"""The PostgreSQL advisory lock a migrating manager holds until it commits."""


class ForeignKeysBroken(RuntimeError):
    """A migration left rows pointing at rows that are gone; it was rolled back."""


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate in one transaction (to `revision`: tests build older databases).

    On PostgreSQL several managers may share the database and start at once (after an
    upgrade, say): each takes an advisory lock first, so one migrates while the others
    wait, then find the schema at head and do nothing (without it two managers creating
    the same tables blocked each other for minutes). SQLite serves one manager's
    processes, and its supervisor migrates before they start.

    On SQLite the migrations run with foreign keys off. Changing a table there means
    rebuilding it (Alembic's batch mode: copy, drop, rename), and with foreign keys on,
    dropping the old `jobs` deletes every task, output and blocklist entry of every job
    through `ON DELETE CASCADE`. SQLite ignores the pragma inside a transaction, so it is
    set on the connection before the migration's transaction begins and set back after
    it ends; `PRAGMA foreign_key_check` then stands in for the checks that were off: a
    migration that left a dangling reference is rolled back rather than committed.
    """
    config = alembic_config()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            if connection.dialect.name == "postgresql":
                # Released at the commit below, or when a failed migration rolls back.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            target = revision
            if revision == "head":
                target = ScriptDirectory.from_config(config).get_current_head() or revision
            current = MigrationContext.configure(connection).get_current_revision()
            check = sqlite and current != target
            dangling = _dangling(connection) if check else set()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if check:
                broken = _dangling(connection) - dangling
                if broken:
                    raise ForeignKeysBroken(
                        f"migrating to {target} would leave {len(broken)} rows pointing at "
                        f"rows that are gone (e.g. {sorted(broken)[:5]}); nothing was changed"
                    )
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()  # nothing to do after the commit; pragmas need none
                _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """Set `PRAGMA foreign_keys` outside any transaction (SQLAlchemy's `execute` would
    begin one first, and SQLite would ignore it): on the driver's connection itself. A
    connection that did not take it is not given back to the pool."""
    raw: Any = connection.connection.driver_connection
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    if raw.execute("PRAGMA foreign_keys").fetchone()[0] != int(on):
        connection.invalidate()
        raise RuntimeError(f"SQLite did not turn foreign keys {'on' if on else 'off'}")


def _dangling(connection: Connection) -> set[tuple[str, int, str]]:
    """(table, rowid, parent table) of every row whose foreign key points nowhere."""
    rows = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    return {(table, rowid, parent) for table, rowid, parent, _ in rows}
