"""Blender versions and live progress: which Blender saved a job's file, per-task stats

Revision ID: 0007
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("blender_saved", sa.String(length=20), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("frame", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sample", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("samples_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("peak_memory_bytes")
        batch.drop_column("samples_total")
        batch.drop_column("sample")
        batch.drop_column("frame")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("blender_saved")
