"""Ids are never handed out twice, and the migration that makes it so loses nothing.

Without AUTOINCREMENT SQLite gives a new row max(id)+1: after `DELETE
/api/jobs/37?purge=true` the next job, someone else's, was 37, and so were the links
and `farmhand download 37` that named the old one. Migration 0012 rebuilds jobs, tasks
and workers on SQLite, 0013 users (a session cookie names its user by id); a rebuild
drops the old table, which with foreign keys on would have deleted every task, output
and dependency of every job.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, Table, inspect, text
from sqlalchemy.orm import Session

from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import alembic_config, upgrade
from farmhand.manager.db.models import (
    Blocklist,
    Job,
    JobFile,
    Task,
    TaskDependency,
    TaskFailure,
    User,
)
from tests.integration.conftest import make_settings, submit_stand_in
from tests.integration.postgres import fresh_database, postgres_bin, postgres_server
from tests.old_schema import insert_old

BEFORE = "0011"
"""The revision before ids were never reused."""
TABLES = (
    "users", "workers", "blobs", "jobs", "tasks", "task_dependencies", "task_failures",
    "job_files", "blocklist",
)  # fmt: skip


def populate(engine: Engine) -> None:
    """Three jobs of a user on three workers: an animation with a video depending on its
    frames, a still in tiles with its merge, and a job since purged (ids 3 and its
    tasks' are gone, as a purge leaves them) — outputs, failures and a blocklist entry."""
    now = utcnow()
    with Session(engine) as session, session.begin():
        alice = User(name="alice", created_at=now)
        workers = [
            SimpleNamespace(
                id=insert_old(
                    session.connection(), "workers", name=f"w{n}", secret_hash=f"{n:064d}",
                    capabilities={}, registered_at=now, status="idle",
                    admin_state="enabled", asleep=False,
                )
            )
            for n in range(3)
        ]  # fmt: skip
        blobs = Table("blobs", MetaData(), autoload_with=session.connection())  # as it was
        for c in "abc":
            session.execute(blobs.insert().values(sha256=f"{c}" * 64, size=10, created_at=now))
        session.add(alice)
        session.flush()
        jobs = [
            SimpleNamespace(
                id=insert_old(
                    session.connection(), "jobs", owner_id=alice.id, name=name,
                    type="animation", status="queued", priority=50,
                    settings={"frame_start": 1, "frame_end": 2}, main_file="scene.blend",
                    created_at=now + timedelta(seconds=n),
                    blender_pinned="5.0" if n == 0 else None,
                )
            )
            for n, name in enumerate(["animation", "still", "purged"])
        ]  # fmt: skip
        animation, still, purged = jobs
        frames = [
            Task(job_id=animation.id, index=n, frames=[n + 1], status="completed") for n in range(2)
        ]
        video = Task(job_id=animation.id, index=2, type="video", frames=[])
        tiles = [
            Task(
                job_id=still.id,
                index=n,
                frames=[],
                tile={"frame": 1, "column": n, "row": 0, "columns": 2, "rows": 1},
                worker_id=workers[1].id,
                status="active",
            )
            for n in range(2)
        ]
        merge = Task(job_id=still.id, index=2, type="merge", frames=[1])
        gone = Task(job_id=purged.id, index=0, frames=[1])
        session.add_all([*frames, video, *tiles, merge, gone])
        session.flush()
        session.add_all(
            [TaskDependency(task_id=video.id, depends_on_id=t.id) for t in frames]
            + [TaskDependency(task_id=merge.id, depends_on_id=t.id) for t in tiles]
            + [
                JobFile(
                    job_id=job.id,
                    kind="input",
                    path="scene.blend",
                    sha256="a" * 64,
                    size=10,
                    created_at=now,
                )
                for job in jobs
            ]
            + [
                JobFile(
                    job_id=animation.id,
                    kind="output",
                    path=f"frames/000{t.frames[0]}.png",
                    sha256="b" * 64,
                    size=10,
                    frame=t.frames[0],
                    task_id=t.id,
                    worker_id=workers[0].id,
                    created_at=now,
                )
                for t in frames
            ]
            + [
                TaskFailure(
                    task_id=tiles[0].id, worker_id=workers[2].id, reason="boom", created_at=now
                ),
                Blocklist(
                    worker_id=workers[2].id,
                    job_id=still.id,
                    task_type="render",
                    reason="failed 3 render tasks",
                    created_at=now,
                ),
            ]
        )
    with Session(engine) as session, session.begin():
        # Purged before the upgrade: its id is the highest a job ever had, and unknown.
        session.execute(text("DELETE FROM jobs WHERE id = 3"))


def dump(
    engine: Engine, columns: dict[str, list[str]] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: of the columns each table has now,
    or only of `columns` (what it had before an upgrade; later migrations add some)."""
    with engine.connect() as connection:
        inspector = inspect(connection)
        dumped = {}
        for table in TABLES:
            names = (columns or {}).get(table) or [c["name"] for c in inspector.get_columns(table)]
            listed = ", ".join(f'"{name}"' for name in names)
            query = text(f"SELECT {listed} FROM {table} ORDER BY 1, 2")
            dumped[table] = [tuple(row) for row in connection.execute(query)]
        return dumped


def columns_of(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as connection:
        inspector = inspect(connection)
        return {table: [c["name"] for c in inspector.get_columns(table)] for table in TABLES}


def task_ids(client: TestClient, admin: dict[str, str], job_id: int) -> set[int]:
    detail = client.get(f"/api/jobs/{job_id}", headers=admin).json()
    return {task["id"] for task in detail["tasks"]}


@pytest.fixture
def old_database(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A farm's SQLite database at the revision before this one, with work in it."""
    url = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, BEFORE)
    populate(engine)
    yield url, engine
    engine.dispose()


def test_the_upgrade_keeps_every_row_its_id_and_its_references(
    old_database: tuple[str, Engine],
) -> None:
    _, engine = old_database
    before, columns = dump(engine), columns_of(engine)
    assert len(before["tasks"]) == 6 and len(before["task_dependencies"]) == 4
    assert len(before["job_files"]) == 4 and before["blocklist"]

    upgrade(engine)

    assert dump(engine, columns) == before
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1, (
            "the migration turned foreign keys off for itself only"
        )
        for table in ("jobs", "tasks", "workers", "users"):
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).scalar()
            assert "AUTOINCREMENT" in str(sql), sql
        seeded: dict[str, int] = {
            name: seq
            for name, seq in connection.exec_driver_sql("SELECT name, seq FROM sqlite_sequence")
        }
        assert seeded == {"jobs": 2, "tasks": 6, "workers": 3, "users": 1}
        indexes = {index["name"] for index in inspect(connection).get_indexes("tasks")}
        assert {"ix_tasks_claim", "ix_tasks_worker"} <= indexes


def test_a_purged_jobs_id_is_never_given_to_the_next_job(
    old_database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = old_database
    engine.dispose()
    settings = make_settings(tmp_path / "data", database_url=url)  # migrates at start
    with TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        newest = submit_stand_in(client, admin, frame_start=1, frame_end=2)
        # Job 3, purged before the upgrade, left no trace: ids go on from the newest kept.
        assert newest == 3
        newest_tasks = task_ids(client, admin, newest)
        purged = client.delete(f"/api/jobs/{newest}", params={"purge": "true"}, headers=admin)
        assert purged.status_code == 204

        next_job = submit_stand_in(client, admin, frame_start=1, frame_end=2)
        assert next_job == newest + 1, "links to the purged job must not lead to this one"
        assert min(task_ids(client, admin, next_job)) > max(newest_tasks), (
            "a late worker's purged task is not a new one"
        )
        assert client.get(f"/api/jobs/{newest}", headers=admin).status_code == 404

        runners = client.get("/api/admin/runners", headers=admin).json()
        newest_runner = max(r["id"] for r in runners)
        assert client.delete(f"/api/admin/runners/{newest_runner}", headers=admin).is_success
        registered = client.post(
            "/api/runner/register", json={"token": settings.runner_token, "name": "new-box"}
        )
        assert registered.status_code == 201
        runners = client.get("/api/admin/runners", headers=admin).json()
        assert max(r["id"] for r in runners) == newest_runner + 1


def test_the_rebuild_refuses_to_run_with_foreign_keys_on(
    old_database: tuple[str, Engine],
) -> None:
    """Alembic on a connection as the manager makes them (foreign keys on) would drop
    `jobs` with `ON DELETE CASCADE` and take every task, output and dependency along."""
    _, engine = old_database
    before, columns = dump(engine), columns_of(engine)
    config = alembic_config()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        config.attributes["connection"] = connection
        with pytest.raises(RuntimeError, match="foreign keys on would delete"):
            command.upgrade(config, "head")
        connection.rollback()
    assert dump(engine, columns) == before


def test_references_broken_before_the_upgrade_do_not_stop_it(
    old_database: tuple[str, Engine],
) -> None:
    """Only references a migration breaks roll it back: an old dangling row (from a
    database once edited by hand) is not the migration's doing and must not keep the
    manager from starting."""
    _, engine = old_database
    with engine.connect() as connection:
        raw: Any = connection.connection.driver_connection  # outside any transaction
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute(
            "INSERT INTO task_failures (task_id, reason, created_at) "
            "VALUES (999, 'orphan', '2024-01-01 00:00:00')"
        )
        raw.execute("PRAGMA foreign_keys=ON")
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        rows = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        assert [(table, parent) for table, _, parent, _ in rows] == [("task_failures", "tasks")]


@pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed")
@pytest.mark.xdist_group("postgres")
def test_on_postgres_the_upgrade_changes_nothing_and_ids_are_not_reused(
    tmp_path: Path,
) -> None:
    with postgres_server() as server:
        url = fresh_database(server, f"ids_{tmp_path.name}")
        engine = make_engine(url)
        upgrade(engine, BEFORE)
        populate(engine)
        before, columns = dump(engine), columns_of(engine)
        upgrade(engine)
        assert dump(engine, columns) == before
        with Session(engine) as session, session.begin():
            newest = Job(
                owner_id=1, name="new", settings={}, main_file="s.blend", created_at=utcnow()
            )
            session.add(newest)
            session.flush()
            assert newest.id == 4, "PostgreSQL's sequence remembers the purged job 3"
        engine.dispose()
