"""runner registration limits and revocation: a registration token's maximum uses

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runner_registration_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_uses", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runner_registration_tokens", schema=None) as batch_op:
        batch_op.drop_column("max_uses")
