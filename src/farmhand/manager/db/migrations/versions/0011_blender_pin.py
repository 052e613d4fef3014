"""jobs.blender_pinned: the Blender series every render task of a job renders with

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs under way keep no pin: the first render task claimed after the upgrade sets it.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("blender_pinned", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("blender_pinned")
