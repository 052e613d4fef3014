"""video follow-up tasks: no schema change

A video is a `tasks` row of type `video` with `task_dependencies` on the render tasks
(both tables exist since 0001/0002), its settings live in the job's `settings` JSON, and
the video itself is a `job_files` output row with `frame` NULL. The revision stays so the
chain keeps one number per piece of work.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
