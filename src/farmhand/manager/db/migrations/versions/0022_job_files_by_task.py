"""job_files: find a task's files by the task without a scan

Revision ID: 0022
Revises: 0021

`job_files.task_id` is a foreign key that is set to null when its task is deleted, so
deleting a task makes the database look for the files naming it: without this index a
scan of every job file of the farm per task. Deleting a big job (its tasks a batch at a
time, `jobs/delete.py`) held the write lock for about a second per 500 tasks on a farm
of 18,000 files, and longer the more files the farm kept. The completion of a tile
(does the task have its tile?) asks the same.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_files_task_id", "job_files", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_files_task_id", table_name="job_files")
