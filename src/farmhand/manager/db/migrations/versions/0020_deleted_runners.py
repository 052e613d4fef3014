"""deleted_runners: a deleted runner's secret is told apart from an unknown one

Revision ID: 0020
Revises: 0019

Deleting a runner dropped its row, and with it all the manager knew of its secret: the
worker's next request got the same `401 unknown runner secret; register again` as a
secret lost with a database restored from a backup, so the worker registered again with
the shared registration token and went on rendering. A deleted runner's secret hash now
stays here (`api/deps.runner_deleted`), and its worker is told it was deleted and stops.
Runners deleted before this migration left nothing to remember: their machines are
still treated as unknown.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from farmhand.manager.db.types import UTCDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_runners",
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("secret_hash"),
        sa.UniqueConstraint("worker_id"),
    )


def downgrade() -> None:
    op.drop_table("deleted_runners")
