"""resumable uploads: no schema change

Upload sessions live on disk, next to their bytes, in the blob store's temporary area
(`farmhand.manager.storage.partial_uploads`): a session and its partial data are created,
resumed and removed together, and survive a manager restart without a table.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
