"""The SQLite file deleted (or replaced) under a running manager.

Before: the manager went on with the file it had open, `farmhand submit` said "job 3
queued", nothing was logged, and after the restart every job was gone. Now the reaper's
pass (every `reaper_interval`) notices the path no longer leads to the file it opened,
logs an error naming it, and from then on every request that needs the database is
answered 503 saying why, `GET /healthz` too; the restart is refused (a farm's files
without their database) rather than starting an empty farm.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app, prepare
from farmhand.manager.db.presence import StartRefused
from tests.integration.conftest import make_settings, post_stand_in, submit_stand_in


@pytest.fixture(autouse=True)
def _logs_to_an_open_stream() -> None:
    """A CLI test before this one in the process may have left structlog writing to a
    stream that is closed now (test_missing_database.invoke says why)."""
    structlog.reset_defaults()


def _until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_deleted_database_file_stops_every_change_with_a_503_and_says_so(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    database = settings.data_dir / "farmhand.sqlite3"
    with structlog.testing.capture_logs() as events, TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        assert submit_stand_in(client, admin) == 1
        assert client.get("/healthz").status_code == 200

        database.unlink()  # as the report did: `rm data/farmhand.sqlite3`
        _until(lambda: client.get("/healthz").status_code == 503, "the manager never noticed")

        health = client.get("/healthz")
        assert "database file was deleted or replaced" in health.json()["detail"]
        refused = post_stand_in(client, admin)
        assert refused.status_code == 503, refused.text
        assert "accepts nothing more" in refused.json()["detail"], refused.text
        assert str(database) not in refused.text, "the path is for the log, not for clients"
        listed = client.get("/api/jobs", headers=admin)
        assert listed.status_code == 503, "no list of jobs that a restart would not have"
        worker = client.post(
            "/api/runner/register", json={"token": settings.runner_token, "name": "w1"}
        )
        assert worker.status_code == 503, "a runner's writes are refused too"
    gone = [event for event in events if event["event"].startswith("the database file is gone")]
    assert len(gone) == 1, events  # said once, not every pass
    assert gone[0]["log_level"] == "error" and gone[0]["path"] == str(database)
    assert gone[0]["was"] == "deleted"

    with pytest.raises(StartRefused, match="no database"):
        prepare(settings)  # the restart says what is missing; it starts no empty farm


def test_a_replaced_database_file_is_refused_and_so_is_one_moved_back_until_a_restart(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    database = settings.data_dir / "farmhand.sqlite3"
    with TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        assert submit_stand_in(client, admin) == 1

        # A copy put in its place (a restore while the manager runs): another file.
        with sqlite3.connect(database) as live, sqlite3.connect(tmp_path / "copy") as copy:
            live.backup(copy)
        shutil.move(tmp_path / "copy", database)
        _until(lambda: client.get("/healthz").status_code == 503, "the manager never noticed")
        assert post_stand_in(client, admin).status_code == 503

    settings = make_settings(tmp_path / "moved")
    database = settings.data_dir / "farmhand.sqlite3"
    with TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        database.rename(tmp_path / "aside.sqlite3")
        _until(lambda: client.get("/healthz").status_code == 503, "the manager never noticed")
        (tmp_path / "aside.sqlite3").rename(database)  # the same file, back
        time.sleep(4 * settings.reaper_interval)
        # Still refused: a connection opened meanwhile may be on an empty file of its own.
        assert post_stand_in(client, admin).status_code == 503
    context, _ = prepare(settings)  # a restart on the file put back is fine
    context.db.dispose()
