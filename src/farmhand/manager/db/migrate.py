"""Bring the schema to the newest revision at manager start.

Run on every start: a fresh database gets every table, an older one gets the
migrations it lacks, and an up-to-date one costs a single query.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


MIGRATION_LOCK = 0x6661726D68616E64  # "farmhand"
"""The PostgreSQL advisory lock a migrating manager holds until it commits."""


def upgrade(engine: Engine) -> None:
    """Migrate in one transaction. On PostgreSQL several managers may share the database
    and start at once (after an upgrade, say): each takes an advisory lock first, so one
    migrates while the others wait, then find the schema at head and do nothing (without
    it two managers creating the same tables blocked each other for minutes). SQLite
    serves one manager's processes, and its supervisor migrates before they start."""
    config = alembic_config()
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Released at the commit below, or when a failed migration rolls back.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
