"""Rows written into a database at an older revision, for migration tests.

The ORM models describe the newest schema: an `INSERT` through them names columns a
table did not have yet (`workers.address` before 0015) and fails. These write through
the table as the database itself has it (reflected), with the values given.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, MetaData, Table


def insert_old(connection: Connection, table: str, **values: Any) -> int:
    """Insert one row into `table` as it is at the database's revision; its id."""
    reflected = Table(table, MetaData(), autoload_with=connection)
    result = connection.execute(reflected.insert().values(**values))
    (primary_key,) = result.inserted_primary_key or (None,)
    assert primary_key is not None
    return int(primary_key)
