"""scheduling: find a frame's output row by (job, kind, frame) without a scan

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_files") as batch:
        batch.create_index("ix_job_files_frame", ["job_id", "kind", "frame"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_files") as batch:
        batch.drop_index("ix_job_files_frame")
