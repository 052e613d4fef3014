"""jobs, tasks and workers: AUTOINCREMENT on SQLite, so no id is handed out twice

Revision ID: 0012
Revises: 0011

Without AUTOINCREMENT SQLite gives a new row max(id)+1: purging the newest job gave the
next job, someone else's, its id, and with it the links, `farmhand job N` and `farmhand
download N` that named the old one; a task id could come back while a late worker still
held the purged task of that id, a worker id while a deleted runner's outbox still
named it. PostgreSQL's sequences never go back: nothing to do there.

The rebuild is `farmhand.manager.db.autoincrement.rebuild` (shared with 0013).
"""

from collections.abc import Sequence

from farmhand.manager.db.autoincrement import rebuild

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("workers", "jobs", "tasks")


def upgrade() -> None:
    rebuild(TABLES, autoincrement=True)


def downgrade() -> None:
    rebuild(TABLES, autoincrement=False)
