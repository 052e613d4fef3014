"""Garbage collection of many blobs never keeps the workers waiting, and always finishes.

A pass deleted every collectable blob's row in one write transaction: 80,000 blobs left
by purged jobs held SQLite's one write lock for 7 s, and every worker's heartbeat,
upload and completion waited behind it (a heartbeat took as long; a bigger store or a
slower disk takes it past the heartbeat timeout, and live workers are marked offline).
A pass now deletes them in batches, each its own short transaction, and removes a
batch's files after its commit.

Each test writes `COLLECTABLE` blobs garbage collection must remove (rows and files
straight to the store: uploading them would take minutes), half of them uploads no job
ever used, half what a purged job used long ago, and blobs it must keep. The moment "in
the middle" is a batch's files being removed (`gc.remove_blob_files`, after its commit)
while some collectable blobs are gone and some are left.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, BlobUpload, JobFile, User
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage import gc
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.postgres import fresh_database
from tests.integration.test_delete_big_job import WAIT, running, stored
from tests.integration.test_scheduling import manager_of

COLLECTABLE = 1600
"""Blobs the pass must remove: several of its batches (`gc.BATCH`)."""
GRACE = timedelta(hours=1)
RETENTION = timedelta(days=2)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("postgres"))]
)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ManagerSettings:
    """A manager's settings on SQLite or a fresh PostgreSQL database, garbage collection
    run by the test only."""
    overrides: dict[str, object] = {
        "gc_interval": 0,
        "blob_grace_seconds": GRACE.total_seconds(),
        "blob_retention_days": RETENTION / timedelta(days=1),
    }
    if request.param == "postgresql":
        server: str = request.getfixturevalue("postgres_url")
        overrides["database_url"] = fresh_database(server, f"gcshort_{tmp_path.name}")
    return make_settings(tmp_path / "data", **overrides)


@dataclass
class Store:
    collectable: list[str]
    """Unreferenced and past their grace period or retention: the pass removes them."""
    kept: dict[str, str]
    """What the pass must keep, by why."""
    kept_unreferenced_bytes: int
    scene: str
    """The live job's .blend, kept as its input."""


def blob(context: ManagerContext, label: str) -> dict[str, Any]:
    """A blob's file in the store, and its row (to insert)."""
    data = label.encode()
    sha = hashlib.sha256(data).hexdigest()
    path = context.blobs.path_for(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"sha256": sha, "size": len(data), "created_at": utcnow(), "used_at": None}


def big_store(farm: Farm) -> Store:
    """`COLLECTABLE` blobs to remove, all uploaded by the admin (so any of them may be
    named in a job); and blobs to keep: an old input of a live job, a used blob within
    its retention, and an unused upload a client was told about within the grace period."""
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=3)
    context = manager_of(farm)
    long_ago = utcnow() - 2 * RETENTION
    rows = []
    for n in range(COLLECTABLE):
        row = blob(context, f"collectable {n}")
        row.update(created_at=long_ago, used_at=long_ago if n % 2 else None)
        rows.append(row)
    within_retention = blob(context, "a purged job's frame, kept for a resubmission")
    within_retention.update(created_at=utcnow() - GRACE * 2, used_at=utcnow() - GRACE * 2)
    touched = blob(context, "an old upload a client was just told about")
    touched.update(created_at=long_ago, touched_at=utcnow())
    with context.db.read() as session:
        admin = session.scalar(select(User.id).order_by(User.id).limit(1))
        (scene,) = session.scalars(select(JobFile.sha256).where(JobFile.job_id == job_id))
    with context.db.transaction() as session:
        session.execute(insert(Blob), [*rows, within_retention, touched])
        session.execute(
            insert(BlobUpload),
            [{"sha256": r["sha256"], "user_id": admin, "uploaded_at": long_ago} for r in rows],
        )
        # Only its reference keeps the live job's input.
        session.execute(
            update(Blob).where(Blob.sha256 == scene).values(created_at=long_ago, touched_at=None)
        )
    return Store(
        collectable=[r["sha256"] for r in rows],
        kept={
            scene: "an input of a live job",
            within_retention["sha256"]: "a used blob within its retention",
            touched["sha256"]: "an upload touched within the grace period",
        },
        kept_unreferenced_bytes=within_retention["size"] + touched["size"],
        scene=scene,
    )


def left(context: ManagerContext, hashes: Collection[str]) -> int:
    """How many of these blobs still have a row."""
    with context.db.read() as session:
        return len(list(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(hashes)))))


@contextmanager
def midway(
    context: ManagerContext, hashes: list[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Calls the function given once, when a pass removes a batch's files (after its
    commit) with some of `hashes` gone and some left: the pass is under way."""
    remove = gc.remove_blob_files
    at: list[Callable[[], None]] = []
    seen = threading.Event()

    def removing(context: ManagerContext, gone: Collection[str]) -> int:
        if at and not seen.is_set() and 0 < left(context, hashes) < len(hashes):
            seen.set()
            at[0]()
        return remove(context, gone)

    monkeypatch.setattr(gc, "remove_blob_files", removing)
    yield at.append


def answered(call: Callable[[], httpx.Response]) -> httpx.Response:
    """`call`'s answer, made in another thread; fails the test if it waits for `WAIT`
    (for a write lock the pass holds, say)."""
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    thread.join(WAIT)
    assert answers, f"no answer within {WAIT} s while garbage collection was under way"
    return answers[0]


def test_workers_are_answered_while_many_blobs_are_collected(
    settings: ManagerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(settings) as farm:
        store = big_store(farm)
        worker = farm.register_runner("idle")
        context = manager_of(farm)
        reached, resume = threading.Event(), threading.Event()
        rescued = max(store.collectable)  # in the pass's last batch (hash order)

        def pause() -> None:
            reached.set()
            assert resume.wait(4 * WAIT), "the test never let garbage collection go on"

        results: dict[str, httpx.Response] = {}

        def collect() -> None:
            results["gc"] = farm.client.post("/api/admin/gc", headers=farm.admin)

        with midway(context, store.collectable, monkeypatch) as at:
            at(pause)
            collector = threading.Thread(target=collect, name="gc", daemon=True)
            collector.start()
            try:
                for _ in range(int(WAIT / 0.05)):
                    if reached.wait(0.05):
                        break
                    assert collector.is_alive(), (
                        "garbage collection never let go of the database while collectable "
                        "blobs were left: it held the write lock until all were gone"
                    )
                else:
                    pytest.fail(f"garbage collection did not get under way within {WAIT} s")
                # Under way: another worker's heartbeat is answered, and a job naming a
                # blob the pass has not reached yet is created (and keeps it).
                beat = answered(
                    lambda: farm.client.post("/api/runner/heartbeat", headers=worker, json={})
                )
                assert beat.status_code == 200, beat.text
                made = answered(
                    lambda: farm.client.post(
                        "/api/jobs",
                        headers=farm.admin,
                        json={
                            "main_file": "scene.blend",
                            "files": {"scene.blend": store.scene, "notes.txt": rescued},
                            "frame_start": 1,
                            "frame_end": 1,
                        },
                    )
                )
                assert made.status_code == 202, made.text
            finally:
                resume.set()
                collector.join(WAIT)
        assert not collector.is_alive(), f"garbage collection did not end within {WAIT} s"
        assert results["gc"].status_code == 200, results["gc"].text
        report = results["gc"].json()
        assert report["removed"] == COLLECTABLE - 1, report
        assert report["kept_unreferenced"] == 2, report
        gone = [sha for sha in store.collectable if sha != rescued]
        assert stored(context, gone) == 0, "every collectable blob's row and file are gone"
        for sha, why in {**store.kept, rescued: "named by a job mid-pass"}.items():
            assert stored(context, [sha]) == 1 and context.blobs.has(sha), f"{why} was kept"
        usage = farm.client.get("/api/admin/usage", headers=farm.admin).json()
        assert usage["blobs"] == len(store.kept) + 1, usage
        assert usage["unreferenced_bytes"] == store.kept_unreferenced_bytes, usage


class Stopped(Exception):
    """The manager stopping between a batch's commit and the removal of its files."""


def test_a_pass_cut_short_leaves_the_rest_to_the_next(
    settings: ManagerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(settings) as farm:
        store = big_store(farm)
        context = manager_of(farm)

        def stop() -> None:
            raise Stopped

        with midway(context, store.collectable, monkeypatch) as at:
            at(stop)
            with pytest.raises(Stopped):
                gc.collect_garbage(context, utcnow())
        remaining = left(context, store.collectable)
        assert 0 < remaining < COLLECTABLE, "what its commits freed is gone, the rest is not"
        assert gc.collect_garbage(context, utcnow()).removed == remaining
        assert left(context, store.collectable) == 0
        for sha, why in store.kept.items():
            assert stored(context, [sha]) == 1 and context.blobs.has(sha), f"{why} was kept"
        # The stopped batch's files lost their rows: stray files, swept once older than
        # the grace period, as after a crash between storing and recording.
        later = utcnow() + GRACE + timedelta(seconds=1)
        assert gc.collect_garbage(context, later).stray_files > 0
        assert stored(context, store.collectable) == 0
