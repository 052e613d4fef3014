"""job_files: find the files that use a blob by its hash without a scan

Revision ID: 0017
Revises: 0016

Asked whenever a blob's fate depends on who uses it: garbage collection and the storage
report ("is any job file this blob?", per blob), and whether a user may name a hash in
a job (`storage/access.readable`: is it a file of one of their jobs?). Without this
index each was a scan of every job file of the farm.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_files_sha256", "job_files", ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_files_sha256", table_name="job_files")
