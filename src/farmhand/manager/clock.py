"""The manager's one notion of "now": aware UTC, so SQLite and PostgreSQL agree."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
