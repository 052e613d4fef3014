"""blob_uploads.asked_at: when the uploader was last told their file is stored

Revision ID: 0025
Revises: 0024

A canceled submit releases the files it uploaded (`DELETE /api/blobs/{sha256}`), unless
another submit of the same user was told meanwhile that the file is stored and may be
about to name it. That was judged by the blob's `touched_at`, which anyone holding the
file moves, and only when nobody else held it: the answer (409 or 204) told a user
whether someone else had the file, and a user's own second submit lost the file when
someone else held it too. The user's own asking is now kept on their claim
(`gc.touch_blobs`, `gc.release_upload`). Claims from before this revision were never
asked about as far as it knows: null.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from farmhand.manager.db.types import UTCDateTime

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blob_uploads") as batch:
        batch.add_column(sa.Column("asked_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blob_uploads") as batch:
        batch.drop_column("asked_at")
