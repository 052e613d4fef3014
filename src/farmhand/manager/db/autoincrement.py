"""Making SQLite tables AUTOINCREMENT, for the migrations that need it (0012, 0013).

Without AUTOINCREMENT SQLite gives a new row max(id)+1, so deleting the newest row hands
its id to the next one. For rows named by their id outside the database (a job in a
link, a user in a signed session cookie) that gives the old name to somebody else.
PostgreSQL's sequences never go back: nothing to do there.

SQLite cannot add AUTOINCREMENT to a table: each is rebuilt (copied, dropped, the copy
renamed), keeping every row and its id. Dropping a table with foreign keys on would
delete every row that refers to it (`ON DELETE CASCADE`), so this refuses to run unless
foreign keys are off, as `farmhand.manager.db.migrate.upgrade` sets them (and checks
every reference afterwards).

Kept here rather than in a migration so that both migrations run the same steps; a
migration must not change once released, so neither may this module's behaviour.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

SEQUENCES = sa.table("sqlite_sequence", sa.column("name"), sa.column("seq"))
"""Where SQLite keeps the highest id an AUTOINCREMENT table ever gave out."""


def rebuild(tables: tuple[str, ...], *, autoincrement: bool) -> None:
    """Rebuild `tables` with (or, downgrading, without) AUTOINCREMENT on SQLite."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            f"rebuilding {', '.join(tables)} with foreign keys on would delete every row "
            "that refers to them: migrate with farmhand.manager.db.migrate"
        )
    for table in tables:
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
