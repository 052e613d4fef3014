"""jobs.missing_files, jobs.missing_count: what a job was submitted without

Revision ID: 0018
Revises: 0017

`farmhand submit --allow-missing` renders a scene without the files it names that do not
exist (Blender shows them magenta); the job keeps their names and count so that whoever
looks at it can tell its frames are not a complete render. Null on every earlier job: it
was not recorded then.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("missing_files", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("missing_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("missing_count")
        batch.drop_column("missing_files")
