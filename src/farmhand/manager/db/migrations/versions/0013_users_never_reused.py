"""users: AUTOINCREMENT on SQLite, so a deleted user's id never names a new user

Revision ID: 0013
Revises: 0012

A browser session is a signed cookie holding a user's id and session epoch, checked
against the user row on each request (`auth/sessions.py`). Without AUTOINCREMENT SQLite
gave a new user the id of the newest user deleted before it, with a session epoch of 0
again: a cookie the deleted person still held then signed them in as the new user, for
as long as it lasted (12 hours). PostgreSQL's sequences never go back: nothing to do
there. The rebuild is `farmhand.manager.db.autoincrement.rebuild` (as in 0012).
"""

from collections.abc import Sequence

from farmhand.manager.db.autoincrement import rebuild

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("users",)


def upgrade() -> None:
    rebuild(TABLES, autoincrement=True)


def downgrade() -> None:
    rebuild(TABLES, autoincrement=False)
