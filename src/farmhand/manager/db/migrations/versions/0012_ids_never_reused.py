"""jobs, tasks and workers: AUTOINCREMENT on SQLite, so no id is handed out twice

Revision ID: 0012
Revises: 0011

Without AUTOINCREMENT SQLite gives a new row max(id)+1: purging the newest job gave the
next job, someone else's, its id, and with it the links, `farmhand job N` and `farmhand
download N` that named the old one; a task id could come back while a late worker still
held the purged task of that id, a worker id while a deleted runner's outbox still
named it. PostgreSQL's sequences never go back: nothing to do there.

SQLite cannot add AUTOINCREMENT to a table: each is rebuilt (copied, dropped, the copy
renamed), keeping every row and its id. Dropping a table with foreign keys on would
delete every row that refers to it (`ON DELETE CASCADE`: a job's tasks, outputs,
blocklist entries), so this refuses to run unless foreign keys are off, as
`farmhand.manager.db.migrate.upgrade` sets them (and checks every reference afterwards).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("workers", "jobs", "tasks")
SEQUENCES = sa.table("sqlite_sequence", sa.column("name"), sa.column("seq"))
"""Where SQLite keeps the highest id an AUTOINCREMENT table ever gave out."""


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)


def _rebuild(*, autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "rebuilding jobs, tasks and workers with foreign keys on would delete every "
            "task, output and log of every job: migrate with farmhand.manager.db.migrate"
        )
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
        if autoincrement:
            # The highest id in use is the highest SQLite can know was ever used: the next
            # row gets one more even if this one is deleted first. (Ids deleted above it
            # before the upgrade left no trace.)
            highest = sa.func.max(sa.table(table, sa.column("id")).c.id)
            op.execute(SEQUENCES.delete().where(SEQUENCES.c.name == table))
            op.execute(
                SEQUENCES.insert().from_select(
                    ["name", "seq"],
                    sa.select(sa.literal(table), highest).having(highest.is_not(None)),
                )
            )
