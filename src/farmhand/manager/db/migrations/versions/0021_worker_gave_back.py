"""workers.gave_back_*: the last task a runner gave back, when, and why

Revision ID: 0021
Revises: 0020

A worker whose machine cannot work (its disk full, its work dir not writable) gives its
task back with a reason and takes no task for a while; the runners listing showed it
plain `idle`, as if ready for work. The manager now keeps the last give-back on the
runner (`api/runner.release`) and says it beside an idle runner's status until it is
handed a task again (`api/admin`, `shared/protocol.status_note`). Runners upgraded from
before this migration have given nothing back as far as it knows: all three are null.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from farmhand.manager.db.types import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("gave_back_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("gave_back_task_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("gave_back_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gave_back_reason")
        batch.drop_column("gave_back_task_id")
        batch.drop_column("gave_back_at")
