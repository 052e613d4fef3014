"""The manager's database away for a while: PostgreSQL stopped or unreachable, SQLite's
file locked by another process.

Before: every request was a 500 with a 60-line traceback (and the reaper logged its
own twice a second), and within a second of the database coming back the reaper took
every worker for silent, since none of their heartbeats had been stored: every running
task was requeued, a worker only retrying its upload was told the task was aborted,
and everything rendered again. Now a request that fails because the database cannot be
used is `503` with `Retry-After`, the outage is logged once when it starts and once
when it ends, and the time it lasted (requests refused, the reaper's own passes failed)
does not count against workers, as after a manager restart or a full disk.

PostgreSQL goes away by cutting a TCP proxy between the manager and a real server (its
connections are broken, new ones refused, as when the server stops); SQLite by another
connection holding the write lock past the manager's busy timeout (shortened here).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import event, make_url

from farmhand.manager.app import create_app
from farmhand.manager.context import ManagerContext
from tests.integration.conftest import Farm, make_settings, png_bytes, submit_stand_in
from tests.integration.postgres import fresh_database, postgres_bin

TIMEOUT = 3.0
"""The heartbeat timeout. Once the database is back, the test's worker makes its next
call within a small part of it (a loaded CI machine may take a second over a request),
and keeps heartbeating after, as a worker's heartbeat thread does."""
OUTAGE = TIMEOUT + 1.0
"""How long the database is away: longer than the timeout, so the manager's start and
the worker's last stored heartbeat are far enough back not to hide a clock that counted
the outage."""
PASSWORD = "pw-s3cret"
"""In the manager's database URL (the test server trusts everyone, so it is never
checked): it must appear in no answer and no log line."""

needs_postgres = pytest.mark.skipif(
    postgres_bin() is None, reason="Debian's postgresql is not installed"
)
pytestmark = pytest.mark.xdist_group("postgres")


@pytest.fixture(autouse=True)
def _logs_to_an_open_stream() -> None:
    """A CLI test before this one in the process may have left structlog writing to a
    stream that is closed now (test_missing_database.invoke says why)."""
    structlog.reset_defaults()


class CuttableProxy:
    """A TCP forwarder to `target_port` that can be cut (every connection closed, new
    ones refused, as a stopped server does) and started again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, []
        for each in [listener, *sockets] if listener is not None else sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def _postgres_farm(tmp_path: Path, server_url: str) -> Iterator[tuple[Farm, CuttableProxy]]:
    """A manager on PostgreSQL through a proxy; with the proxy's `cut` and `start`."""
    database = make_url(fresh_database(server_url, f"outage_{tmp_path.name}"))
    proxy = CuttableProxy(int(database.port or 5432))
    proxy.start()
    url = database.set(port=proxy.port, password=PASSWORD).render_as_string(hide_password=False)
    settings = make_settings(
        tmp_path / "data", database_url=url, heartbeat_timeout=TIMEOUT, reaper_interval=0.1
    )
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert settings.admin_token and settings.runner_token
            yield (
                Farm(client, settings.admin_token, settings.runner_token, settings.data_dir),
                proxy,
            )
    finally:
        proxy.cut()


@contextlib.contextmanager
def _outage(kind: str, farm: Farm, proxy: Any) -> Iterator[None]:
    """The database away for the block."""
    if kind == "postgres-down":
        proxy.cut()
        try:
            yield
        finally:
            proxy.start()
        return
    # Another process holds SQLite's write lock (in WAL mode readers go on).
    holder = sqlite3.connect(farm.data_dir / "farmhand.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextlib.contextmanager
def _sqlite_farm(tmp_path: Path) -> Iterator[tuple[Farm, None]]:
    settings = make_settings(tmp_path / "data", heartbeat_timeout=TIMEOUT, reaper_interval=0.1)
    app = create_app(settings)
    context: ManagerContext = app.state.farm

    @event.listens_for(context.db.engine, "connect")
    def _impatient(dbapi_connection: Any, _record: Any) -> None:
        # After the manager's own pragmas: a minute's wait for the lock is too long here.
        dbapi_connection.execute("PRAGMA busy_timeout=100")

    context.db.engine.dispose()  # connections opened by the start get it too
    with TestClient(app, raise_server_exceptions=False) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir), None


def _farm(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if kind == "postgres-down":
        if postgres_bin() is None:
            pytest.skip("Debian's postgresql is not installed")
        return _postgres_farm(tmp_path, request.getfixturevalue("postgres_url"))
    return _sqlite_farm(tmp_path)


def _running_task(farm: Farm) -> tuple[dict[str, str], dict[str, Any]]:
    """A runner holding the one task of a two-frame job, its heartbeat stored."""
    runner = farm.register_runner()
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner)
    assert task.status_code == 200, task.text
    beat = {"current_task_id": task.json()["task_id"]}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=beat).status_code == 200
    return runner, task.json()


def _still_its_own_and_completes(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> None:
    """Reaper passes with the database back, before the worker's next call (it may come
    late: a worker backs off between retries); then the worker finishes as if nothing
    had happened, its task rendered once.

    The worker calls first and the test looks after: the worker has one timeout from
    the end of the outage, and the test must not spend it on a loaded machine. A pass
    that took the worker for silent would have requeued its task, which no later call
    undoes, so the checks after still see it."""
    time.sleep(0.5)  # reaper passes (every 0.1 s) with the database back
    beat = {"current_task_id": task["task_id"]}
    back = farm.client.post("/api/runner/heartbeat", headers=runner, json=beat)
    assert back.status_code == 200 and back.json()["abort_task_ids"] == [], back.text
    heartbeating = _Heartbeating(farm, runner, task["task_id"])
    try:
        runners = farm.client.get("/api/admin/runners", headers=farm.admin).json()
        assert runners[0]["status"] == "busy", runners
        job = farm.client.get(f"/api/jobs/{task['job_id']}", headers=farm.admin).json()
        held = job["tasks"][0]
        assert (held["status"], held["last_error"]) == ("active", None), held
        for frame in (1, 2):
            upload = farm.client.put(
                f"/api/runner/tasks/{task['task_id']}/frames/{frame}.png",
                headers=runner,
                content=png_bytes(),
            )
            assert upload.status_code == 201, upload.text
        done = farm.client.post(
            f"/api/runner/tasks/{task['task_id']}/complete",
            headers=runner,
            json={"frames": [1, 2]},
        )
        assert done.status_code == 200 and done.json()["job_status"] == "completed", done.text
    finally:
        heartbeating.stop()
    assert set(heartbeating.answers) == {200}
    job = farm.client.get(f"/api/jobs/{task['job_id']}", headers=farm.admin).json()
    assert job["tasks"][0]["attempts"] == 1, "rendered once, not again elsewhere"


def _said_once_each(events: list[MutableMapping[str, Any]]) -> None:
    """One line when the outage starts and one when it ends; no traceback."""
    errors = [e for e in events if e["log_level"] in ("error", "critical")]
    assert [e["event"] for e in errors] == [
        "database unavailable: requests are answered 503 until it is back, and workers "
        "are not counted silent meanwhile"
    ], errors
    assert not any("exc_info" in e for e in events), "no traceback"
    back = [e for e in events if e["event"] == "database available again"]
    assert len(back) == 1, events
    assert PASSWORD not in repr(events)


@pytest.mark.parametrize("kind", ["postgres-down", "sqlite-locked"])
def test_a_worker_calling_through_a_database_outage_keeps_its_task(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """The QA report's run: the database away for longer than the heartbeat timeout while the
    worker keeps calling. Every call is a 503 that says the database is unavailable
    (never where it is, nor its password) and asks to retry; when the database is back
    the worker is still busy with its task and finishes it."""
    with (
        structlog.testing.capture_logs() as events,
        _farm(kind, tmp_path, request) as (farm, proxy),
    ):
        runner, task = _running_task(farm)
        beat = {"current_task_id": task["task_id"]}
        answers = []
        with _outage(kind, farm, proxy):
            until = time.monotonic() + OUTAGE
            while time.monotonic() < until:  # the worker keeps calling
                answers.append(farm.client.post("/api/runner/heartbeat", headers=runner, json=beat))
                time.sleep(0.2)
            health = farm.client.get("/healthz")
        assert {a.status_code for a in answers} == {503}, answers[-1].text
        refused = answers[-1]
        assert refused.headers["Retry-After"].isdigit(), refused.headers
        assert "database is unavailable" in refused.json()["detail"], refused.text
        for secret in (PASSWORD, "127.0.0.1", "sqlite", str(farm.data_dir)):
            assert secret not in refused.text
        if kind == "postgres-down":  # SQLite's readers are not held up by a writer
            assert health.status_code == 503 and "Retry-After" in health.headers, health.text
        _still_its_own_and_completes(farm, runner, task)
    _said_once_each(events)


@needs_postgres
def test_the_time_postgres_was_away_counts_against_no_worker_even_without_calls(
    tmp_path: Path, postgres_url: str
) -> None:
    """No call reached this manager during the outage (the workers called another
    process, or could not reach the manager either): the reaper's own failed passes
    restart its clock, so the worker is not taken for silent when PostgreSQL is back."""
    with (
        structlog.testing.capture_logs() as events,
        _postgres_farm(tmp_path, postgres_url) as (farm, proxy),
    ):
        runner, task = _running_task(farm)
        with _outage("postgres-down", farm, proxy):
            time.sleep(OUTAGE)
        _still_its_own_and_completes(farm, runner, task)
    _said_once_each(events)


class _Heartbeating:
    """A runner that keeps heartbeating in a thread of its own, as a worker does, each
    call waiting as long as the manager takes to answer."""

    def __init__(self, farm: Farm, runner: dict[str, str], task_id: int) -> None:
        self.farm, self.runner = farm, runner
        self.beat = {"current_task_id": task_id}
        self.answers: list[int] = []
        self.sent = threading.Event()
        """Set once its first call is on its way."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent.set()
            answer = self.farm.client.post(
                "/api/runner/heartbeat", headers=self.runner, json=self.beat
            )
            self.answers.append(answer.status_code)
            self._stop.wait(0.2)

    def answered_since(self, count: int) -> bool:
        return len(self.answers) > count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "a heartbeat never got an answer"


def test_a_lock_shorter_than_the_busy_timeout_requeues_no_healthy_workers_task(
    tmp_path: Path,
) -> None:
    """The QA report's run: two workers rendering, another process holds SQLite's lock
    (`BEGIN EXCLUSIVE`) for longer than the heartbeat timeout but well within the busy
    timeout (the manager's own minute, not shortened here), the workers heartbeating
    all along. Their heartbeats waited on the lock: they were heard, not silent. Before,
    the first reaper pass to get the database after the lock requeued the task of a
    worker whose waiting heartbeat had not been written yet ("worker w2 stopped
    responding") and the work in progress was thrown away. Now the time writes waited
    counts against nobody: both workers stay busy with their tasks and finish them.

    The calls are made in the order that showed it: one worker's heartbeat first in
    line for the lock, then a reaper pass, then the other worker's heartbeat."""
    settings = make_settings(tmp_path / "data", heartbeat_timeout=TIMEOUT, reaper_interval=0.1)
    with (
        structlog.testing.capture_logs() as events,
        TestClient(create_app(settings), raise_server_exceptions=False) as client,
    ):
        assert settings.admin_token and settings.runner_token
        farm = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)
        job_id = submit_stand_in(client, farm.admin, frame_start=1, frame_end=4, chunk_size=2)
        runners, tasks = [], []
        for name in ("w1", "w2"):
            runner = farm.register_runner(name)
            task = client.get("/api/runner/tasks?wait=0", headers=runner)
            assert task.status_code == 200, task.text
            runners.append(runner)
            tasks.append(task.json())
        heartbeats: list[_Heartbeating] = []
        holder = sqlite3.connect(farm.data_dir / "farmhand.sqlite3", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            for runner, task in zip(runners, tasks, strict=True):
                heartbeats.append(_Heartbeating(farm, runner, task["task_id"]))
                assert heartbeats[-1].sent.wait(10)
                time.sleep(0.5)  # a reaper pass (every 0.1 s) is waiting, after w1's call
            time.sleep(OUTAGE)
            answered = [len(h.answers) for h in heartbeats]
            assert answered == [0, 0], "the calls waited for the lock"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        try:  # the workers keep heartbeating while the test looks and they finish
            deadline = time.monotonic() + 30
            while not all(h.answered_since(n) for h, n in zip(heartbeats, answered, strict=True)):
                assert time.monotonic() < deadline, "the heartbeats never got an answer"
                time.sleep(0.05)
            time.sleep(0.5)  # reaper passes (every 0.1 s) with the database back
            shown = client.get("/api/admin/runners", headers=farm.admin).json()
            assert sorted((r["name"], r["status"]) for r in shown) == [
                ("w1", "busy"),
                ("w2", "busy"),
            ], shown
            held = client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"]
            assert [(t["status"], t["last_error"]) for t in held] == [("active", None)] * 2, held
            for runner, task in zip(runners, tasks, strict=True):
                frames = task["frames"]
                for frame in frames:
                    upload = client.put(
                        f"/api/runner/tasks/{task['task_id']}/frames/{frame}.png",
                        headers=runner,
                        content=png_bytes(),
                    )
                    assert upload.status_code == 201, upload.text
                done = client.post(
                    f"/api/runner/tasks/{task['task_id']}/complete",
                    headers=runner,
                    json={"frames": frames},
                )
                assert done.status_code == 200, done.text
        finally:
            for heartbeat in heartbeats:
                heartbeat.stop()
        assert {code for h in heartbeats for code in h.answers} == {200}
        job = client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
        assert job["status"] == "completed"
        assert [t["attempts"] for t in job["tasks"]] == [1, 1], "each rendered once"
    assert not [e for e in events if e["event"] in ("task requeued", "worker offline")], events
    assert not [e for e in events if e["log_level"] in ("error", "critical")], events
