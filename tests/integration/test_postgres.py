"""The manager on PostgreSQL: migrations, a full job and racing claims.

Claiming relies on a conditional UPDATE rather than a lock in the manager process; on
PostgreSQL that means row locks under READ COMMITTED, which is what this checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration import test_blob_access as blob_access_tests
from tests.integration import test_limits as limits_tests
from tests.integration import test_manager_api as api_tests
from tests.integration import test_scheduling as scheduling_tests
from tests.integration.conftest import Farm, make_settings
from tests.integration.postgres import fresh_database, postgres_bin

pytestmark = [
    pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed"),
    pytest.mark.xdist_group("postgres"),
]


@pytest.fixture
def pg_farm(tmp_path: Path, postgres_url: str) -> Iterator[Farm]:
    url = fresh_database(postgres_url, f"farm_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", database_url=url)
    with TestClient(create_app(settings)) as client:
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]


def test_job_completes_on_postgres(pg_farm: Farm) -> None:
    health = pg_farm.client.get("/healthz").json()
    assert health["database"] == "postgresql"
    api_tests.test_job_runs_to_completion_and_outputs_download(pg_farm)


def test_racing_claims_on_postgres(pg_farm: Farm) -> None:
    api_tests.test_two_workers_never_get_the_same_task(pg_farm)


def test_retries_on_postgres(pg_farm: Farm) -> None:
    api_tests.test_failed_task_is_retried_then_fails_the_job(pg_farm)


def test_progress_statement_on_postgres(pg_farm: Farm) -> None:
    """The prepared progress UPDATE (typed NULL parameters, json_array_length)."""
    scheduling_tests.test_progress_is_recorded_only_for_the_holder(pg_farm)


def test_frames_kept_by_an_unfinished_task_on_postgres(pg_farm: Farm) -> None:
    """The job cancel's UPDATE counts each task's stored frames (a correlated subquery
    and json_array_length)."""
    scheduling_tests.test_a_task_ended_unfinished_counts_the_frames_it_stored(pg_farm)


def test_duplicate_uploads_on_postgres(pg_farm: Farm) -> None:
    """Concurrent uploads of one frame: no 500 on the blob row, one output row per frame."""
    scheduling_tests.test_duplicate_uploads_never_corrupt_the_stored_frame(pg_farm)


def test_someone_elses_blob_must_be_sent_on_postgres(pg_farm: Farm) -> None:
    """Who uploaded what (`blob_uploads`, recorded with PostgreSQL's ON CONFLICT)."""
    blob_access_tests.test_a_resumable_upload_of_someone_elses_file_must_send_it(pg_farm)


def test_values_postgres_refuses_are_a_400_on_postgres(pg_farm: Farm) -> None:
    """Out-of-range ids and NUL bytes in text reach PostgreSQL as errors: not a 500."""
    limits_tests.test_ids_beyond_what_the_database_holds_are_a_400(pg_farm)
    answer = pg_farm.client.post("/api/tokens", headers=pg_farm.admin, json={"name": "a\x00b"})
    assert answer.status_code == 400, answer.text


def test_two_managers_starting_at_once_migrate_one_after_the_other(
    tmp_path: Path, postgres_url: str
) -> None:
    """Several managers on one PostgreSQL (DEPLOY.md) may start together, after an
    upgrade say: both migrate a fresh database at the same moment, and both must come up
    on the same schema (one waits for the other), not fail on a table made meanwhile."""
    import threading

    import sqlalchemy

    from farmhand.manager.db.migrate import upgrade

    url = fresh_database(postgres_url, f"migrate_{tmp_path.name}")
    engines = [sqlalchemy.create_engine(url) for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def migrate(engine: sqlalchemy.Engine) -> None:
        start.wait(10)
        try:
            upgrade(engine)
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not [thread for thread in threads if thread.is_alive()], "a migration hung"
    assert errors == [], errors
    with engines[0].connect() as connection:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert len(versions) == 1, versions
    for engine in engines:
        engine.dispose()
