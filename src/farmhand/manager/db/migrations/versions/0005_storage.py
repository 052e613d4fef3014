"""storage: usage, garbage collection, shared storage

Revision ID: 0005
Revises: 0004

`blobs.touched_at`: when a client was last told the blob is here (a deduplicated upload),
so garbage collection and job deletion spare a blob someone is about to reference.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from farmhand.manager.db.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("touched_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("touched_at")
