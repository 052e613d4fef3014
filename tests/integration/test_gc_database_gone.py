"""Garbage collection looks at the database file before each pass, as the reaper does.

The reaper and the deletion loop stat the SQLite file before each pass
(`Database.check_file`) and stop every database use once it is deleted or replaced.
The garbage-collection loop did not: its next pass on a file moved away opened a new
connection at the path, SQLite made an empty database there, and the restart was
refused ("has no farmhand tables") until someone found and removed that file.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from farmhand.manager.app import prepare
from farmhand.manager.storage import gc
from tests.integration.conftest import make_settings


def test_a_pass_on_a_moved_database_file_opens_nothing_at_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data", gc_interval=0.02)
    context, _ = prepare(settings)
    database = settings.data_dir / "farmhand.sqlite3"
    checks: list[str | None] = []
    passes: list[int] = []
    check_file, collect_garbage = context.db.check_file, gc.collect_garbage

    def counted_check() -> str | None:
        checks.append(check_file())
        return checks[-1]

    def counted_pass(*args: object) -> object:
        passes.append(1)
        return collect_garbage(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(context.db, "check_file", counted_check)
    monkeypatch.setattr(gc, "collect_garbage", counted_pass)

    async def run() -> None:
        loop = asyncio.create_task(gc.gc_loop(context))
        # Passes go on (or hang): 10 s to see three checks or a pass, without timing them.
        deadline = time.monotonic() + 10
        while len(checks) < 3 and not passes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        loop.cancel()

    try:
        database.rename(tmp_path / "aside.sqlite3")  # moved away while the manager runs
        asyncio.run(run())
    finally:
        context.db.dispose()
    assert not database.exists(), "a pass made an empty database where the farm's was"
    assert passes == [], "garbage was collected on a database the manager no longer has"
    assert checks[:3] == ["deleted"] * 3, "each pass looks at the file first"
