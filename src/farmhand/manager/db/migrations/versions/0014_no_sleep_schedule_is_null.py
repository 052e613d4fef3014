"""workers.sleep_schedule: a cleared schedule is SQL NULL, not the JSON text `null`

Revision ID: 0014
Revises: 0013

Clearing a runner's sleep schedule stored JSON `null`, which `IS NOT NULL` matched: the
reaper then met a worker "with a schedule" of None, and its whole pass failed from then
on, heartbeat timeouts included (silent workers never went offline). The model now
stores None as SQL NULL (`JSON(none_as_null=True)`); this turns the rows already written
into what it writes. `CAST(... AS TEXT)` reads the stored JSON as text on SQLite and
PostgreSQL alike.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE workers SET sleep_schedule = NULL WHERE CAST(sleep_schedule AS TEXT) = 'null'"
    )


def downgrade() -> None:
    """Nothing to undo: SQL NULL means "no schedule" to every version."""
