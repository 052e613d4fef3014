"""Lookups that only read answer while a long write holds the database.

A big job's deletion, a purge or the group-commit writer under load holds the write lock
(on SQLite this process's and the database's, `Database.transaction`) for as long as it
runs. A browser's live event stream deciding whether an event is the user's, an admin
listing users and a user listing their tokens only read, so they must not queue behind
it (nor add to the writers' queue): each is shown to answer while another thread holds a
write transaction open. On PostgreSQL, where writers take no lock up front, the same
requests answer too, while the held transaction has changed the very rows they read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from farmhand.manager.app import create_app
from farmhand.manager.context import ManagerContext
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.postgres import fresh_database
from tests.integration.test_scheduling import farm_for, manager_of

T = TypeVar("T")

WAIT = 15.0
"""Bounded wait for an answer while the write is held: a hang fails the test after it."""


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("postgres"))]
)
def farm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Farm]:
    """A real manager app on SQLite, or on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgresql":
        server: str = request.getfixturevalue("postgres_url")
        overrides["database_url"] = fresh_database(server, f"reads_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", **overrides)
    with TestClient(create_app(settings)) as client:
        yield farm_for(client, settings)


@contextmanager
def write_held(context: ManagerContext) -> Iterator[None]:
    """A write transaction held open by another thread for the block, as a long deletion
    holds one: it has changed every user's, token's and job's row, uncommitted."""
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with context.db.transaction() as session:
            for table in ("users", "api_tokens", "jobs"):
                session.execute(text(f"UPDATE {table} SET name = name"))
            held.set()
            release.wait(4 * WAIT)  # let go in the end even if the test never says so

    holder = threading.Thread(target=hold, name="long write", daemon=True)
    holder.start()
    try:
        assert held.wait(WAIT), "the write never began"
        yield
    finally:
        release.set()
        holder.join(WAIT)


def answered(call: Callable[[], T], what: str) -> T:
    """What `call` returns, which must come within `WAIT` (it runs on its own thread, so
    a call stuck behind the write fails the test instead of hanging it)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=WAIT)
    except FutureTimeout:
        pytest.fail(f"{what} waited for a write it does not need ({WAIT} s)")
    finally:
        pool.shutdown(wait=False)  # a stuck call ends once the write lets go


def next_event(lines: queue.Queue[str]) -> str:
    """The next event the stream delivers (its lines joined), which must come within
    `WAIT` (heartbeats and the like skipped)."""
    event: list[str] = []
    while True:
        try:
            line = lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"the live stream waited for a write it does not need ({WAIT} s)")
        if line.startswith("event:"):
            event = [line]
        elif event and line:
            event.append(line)
        elif event:
            return "\n".join(event)


def new_user(farm: Farm, name: str) -> dict[str, str]:
    """A user (not an admin) and the headers of their first API token."""
    answer = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_an_admin_lists_users_while_a_write_is_held(farm: Farm) -> None:
    new_user(farm, "bob")
    with write_held(manager_of(farm)):
        answer = answered(
            lambda: farm.client.get("/api/admin/users", headers=farm.admin), "listing users"
        )
    assert answer.status_code == 200, answer.text
    assert {user["name"] for user in answer.json()} == {"admin", "bob"}


def test_a_user_lists_their_tokens_while_a_write_is_held(farm: Farm) -> None:
    bob = new_user(farm, "bob")
    made = farm.client.post("/api/tokens", headers=bob, json={"name": "render script"})
    assert made.status_code == 201, made.text
    with write_held(manager_of(farm)):
        answer = answered(lambda: farm.client.get("/api/tokens", headers=bob), "listing tokens")
    assert answer.status_code == 200, answer.text
    assert [token["name"] for token in answer.json()] == ["render script", "first token"]


def test_a_users_live_stream_shows_their_job_changing_while_a_write_is_held(
    farm: Farm,
) -> None:
    """Whether an event is the user's is looked up (once per job) when it arrives: that
    look-up must not wait for the write, or the stream stalls for everyone's events."""
    bob = new_user(farm, "bob")
    job_id = submit_stand_in(farm.client, bob)
    lines: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def read_stream() -> None:
        timeout = httpx.Timeout(WAIT, read=None)
        with farm.client.stream("GET", "/api/events", headers=bob, timeout=timeout) as stream:
            lines.put(f"status {stream.status_code}")
            for line in stream.iter_lines():
                lines.put(line)
                if stop.is_set():
                    return

    reader = threading.Thread(target=read_stream, name="browser tab", daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=WAIT) == "status 200"
        assert lines.get(timeout=WAIT).startswith("retry:")  # subscribed
        context = manager_of(farm)
        with write_held(context):
            context.events.job_changed(job_id)  # e.g. a runner's progress, committed
            event = next_event(lines)
        assert event.startswith("event: job\n"), event
        assert f'"job_id":{job_id}' in event
    finally:
        stop.set()
        manager_of(farm).events.job_changed(job_id)  # wakes the stream so it can end
        reader.join(WAIT)
