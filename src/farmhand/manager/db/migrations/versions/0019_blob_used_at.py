"""blobs.used_at: whether a job has ever used a blob

Revision ID: 0019
Revises: 0018

A blob no job has ever used (uploaded, never named by a job) is garbage once its grace
period has passed, and counts for its uploaders' quota; one a job has used is kept for
the retention so that a resubmission uploads nothing (`manager/storage/gc.py`). Every
blob already stored is marked used: which of them a job once named is not known, and
keeping them for the retention is what this farm did so far.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from farmhand.manager.db.types import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("used_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE blobs SET used_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("used_at")
