"""Migration 0024 adds `blobs.crc32`, which a job's zip declares before each file's bytes.

A database at revision 0023 (blobs without a CRC-32) is upgraded: its blobs are kept,
with no CRC-32 (null), which their first zip takes and stores
(`test_download_ranges.test_a_blob_keeps_its_crc32_and_an_old_one_gets_it`), and a blob
recorded since has its CRC-32 in its row. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from farmhand.manager.api.uploads import record_blob_in
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database, make_engine
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.storage.blobs import StoredBlob
from tests.integration.postgres import fresh_database

OLD = b"a frame stored before CRC-32s were kept"
NEW = b"a frame stored since"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0023")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO blobs (sha256, size, created_at) VALUES (:sha, :size, :at)"),
            {"sha": sha(OLD), "size": len(OLD), "at": utcnow()},
        )
    upgrade(engine)
    engine.dispose()
    database = Database(database_url)
    try:
        with database.transaction() as session:
            stored = StoredBlob(sha(NEW), len(NEW), Path("unused"), crc32=zlib.crc32(NEW))
            assert record_blob_in(session, stored)
        with database.read() as session:
            found = session.execute(text("SELECT sha256, crc32 FROM blobs")).all()
            rows: dict[str, int | None] = {sha256: crc32 for sha256, crc32 in found}
    finally:
        database.dispose()
    assert rows == {sha(OLD): None, sha(NEW): zlib.crc32(NEW)}


def test_blobs_get_a_crc32_column_on_sqlite(tmp_path: Path) -> None:
    check_upgrade(f"sqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.fixture
def pg_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    yield fresh_database(postgres_url, f"crc_{tmp_path.name}")


@pytest.mark.xdist_group("postgres")
def test_blobs_get_a_crc32_column_on_postgres(pg_url: str) -> None:
    check_upgrade(pg_url)
