"""A client waits for the manager as long as the manager may wait for its database.

QA: `farmhand submit` while another process held the manager's SQLite database for 45 s
(within the manager's one-minute busy timeout) gave up after 33 s, "cannot reach the
manager ... timed out", exit 1, though the manager would have answered. The client's
read timeout was 30 s. Now it is longer than the busy timeout (one constant for both,
`shared.timeouts.DATABASE_BUSY_TIMEOUT`), and a lock longer than that, which the
manager answers `503` with `Retry-After`, is retried by submit's first write too (which
files are missing: it marks the ones the manager holds), as its uploads were.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from sqlalchemy import text

from farmhand.client.client import DEFAULT_TIMEOUT, FarmhandClient
from farmhand.client.retry import RetryPolicy
from farmhand.client.transfer import Entry, Uploader
from farmhand.manager.db.engine import Database
from farmhand.shared.timeouts import DATABASE_BUSY_TIMEOUT


def test_the_client_waits_longer_than_the_manager_waits_for_its_database(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'farm.sqlite3'}")
    try:
        with database.transaction() as session:
            waits = session.execute(text("PRAGMA busy_timeout")).scalar_one()
    finally:
        database.dispose()
    assert waits == DATABASE_BUSY_TIMEOUT * 1000
    assert DEFAULT_TIMEOUT.read is not None and DEFAULT_TIMEOUT.read > DATABASE_BUSY_TIMEOUT
    with FarmhandClient("http://manager") as client:
        assert client._http.timeout.read == DEFAULT_TIMEOUT.read


def test_submit_asks_again_which_files_are_missing_after_a_503(tmp_path: Path) -> None:
    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"BLENDER-v400" + b"\0" * 100)
    sha = hashlib.sha256(blend.read_bytes()).hexdigest()
    asked: list[int] = []

    def manager(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/blobs/missing"
        asked.append(1)
        if len(asked) == 1:  # the database locked past its busy timeout
            detail = "the manager's database is unavailable just now"
            return httpx.Response(503, headers={"Retry-After": "5"}, json={"detail": detail})
        return httpx.Response(200, json={"missing": []})

    with FarmhandClient("http://manager", transport=httpx.MockTransport(manager)) as client:
        uploader = Uploader(client, policy=RetryPolicy(give_up_after=10, first_delay=0.01))
        entry = Entry(blend, sha, blend.stat().st_size)
        assert uploader.plan({"scene.blend": entry}) == []
    assert len(asked) == 2
