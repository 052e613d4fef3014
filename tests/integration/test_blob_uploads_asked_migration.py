"""Migration 0025 adds `blob_uploads.asked_at`: when the uploader was last told their
file is stored, which keeps their claim from a canceled submit's release
(`gc.release_upload`; test_blob_release.py shows both answers).

A database at revision 0024 with a user's claim is upgraded: the claim is kept, never
asked about as far as the manager knows (null), so its owner can still release it. On
SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from tests.integration.postgres import fresh_database

DATA = b"a texture uploaded before asks were kept"
SHA = hashlib.sha256(DATA).hexdigest()


def check_upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0024")
        with engine.begin() as connection:
            now = utcnow()
            connection.execute(
                text("INSERT INTO users (name, role, created_at) VALUES ('ann', 'user', :at)"),
                {"at": now},
            )
            connection.execute(
                text("INSERT INTO blobs (sha256, size, created_at) VALUES (:sha, :size, :at)"),
                {"sha": SHA, "size": len(DATA), "at": now},
            )
            connection.execute(
                text(
                    "INSERT INTO blob_uploads (sha256, user_id, uploaded_at) "
                    "SELECT :sha, id, :at FROM users WHERE name = 'ann'"
                ),
                {"sha": SHA, "at": now},
            )
        upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT sha256, asked_at FROM blob_uploads")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(SHA, None)]


def test_claims_get_an_asked_at_column_on_sqlite(tmp_path: Path) -> None:
    check_upgrade(f"sqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.fixture
def pg_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    yield fresh_database(postgres_url, f"asked_{tmp_path.name}")


@pytest.mark.xdist_group("postgres")
def test_claims_get_an_asked_at_column_on_postgres(pg_url: str) -> None:
    check_upgrade(pg_url)
