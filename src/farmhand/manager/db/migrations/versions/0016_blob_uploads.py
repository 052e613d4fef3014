"""blob_uploads: who sent a blob's bytes, so a hash alone no longer reads someone's file

Revision ID: 0016
Revises: 0015

A blob was anyone's to name in a job once anyone had uploaded it: knowing the SHA-256 of
another user's file (`/api/blobs/missing` even said whether it was stored) let a user
submit a job naming it and download it back in `inputs.zip`. Now a blob is a user's to
name only if they uploaded it (a row here) or it is a file of one of their jobs
(`farmhand.manager.storage.access`). Blobs uploaded before this migration have no row;
the ones their jobs use stay theirs through the jobs. Nothing else to fill in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from farmhand.manager.db.types import UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_uploads",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["sha256"], ["blobs.sha256"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sha256", "user_id"),
    )
    with op.batch_alter_table("blob_uploads") as batch:
        batch.create_index(batch.f("ix_blob_uploads_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("blob_uploads") as batch:
        batch.drop_index(batch.f("ix_blob_uploads_user_id"))
    op.drop_table("blob_uploads")
