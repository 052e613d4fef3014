"""blobs.crc32: each blob's CRC-32, for a job's zip that is laid out before it is sent

Revision ID: 0024
Revises: 0023

A job's outputs.zip (and inputs.zip) declares every file's CRC-32 in its header, before
the file's bytes, so that its layout, its length and its ETag are known in advance and a
download cut off at 29 GB of 30 resumes with a `Range` (`storage/zipplan.py`). The CRC-32
is taken as a blob is written and kept here; blobs stored before this revision have
none (null), and the first zip that holds one reads its file once and stores it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("crc32", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("crc32")
