"""Reads of users' files (a tiled job's views, blend-info's Blender) take their turn off
the thread pool every other request needs (`manager/file_reads.py`).

The read itself is a gated stand-in here: what is under test is where the manager waits
for it, not BAT or Blender (test_stereo_tiles_refused.py reads real and crafted files).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from farmhand.client.client import CREATE_TIMEOUT
from farmhand.manager.file_reads import WAIT_SECONDS, FileReads
from farmhand.manager.jobs import submit
from farmhand.shared.blendscene import UNTRUSTED_WALL_SECONDS
from tests.integration.conftest import FAKE_BLEND, Farm, post_stand_in
from tests.integration.held_work import Held, until
from tests.integration.test_scheduling import manager_of

TILES = {"columns": 2, "rows": 1}
BURST = 45
"""Tiled submissions at once: more than the 40 threads Starlette's pool has."""


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    """The manager's bounded read of a .blend's views, held until released."""
    reads = Held(lambda path: [])
    monkeypatch.setattr(submit, "rendered_views_bounded", reads)
    yield reads
    reads.release()


def test_a_burst_of_tiled_submissions_leaves_the_runners_answered(farm: Farm, held: Held) -> None:
    """45 tiled submissions whose reads are held: the two reading take a thread each and
    the rest wait without one, so a runner's heartbeat is answered meanwhile. They used to
    wait on the pool's 40 threads, and the heartbeat waited until the reads were done."""
    runner = farm.register_runner()
    reads = manager_of(farm).file_reads
    answers: list[int] = []

    def submit_one() -> None:
        answers.append(post_stand_in(farm.client, farm.admin, tiles=TILES).status_code)

    submitting = [threading.Thread(target=submit_one, daemon=True) for _ in range(BURST)]
    for thread in submitting:
        thread.start()
    try:
        until(lambda: held.began + reads.waiting >= 40, "the burst reached the reads")
        beats: list[int] = []
        beating = threading.Thread(
            target=lambda: beats.append(
                farm.client.post("/api/runner/heartbeat", headers=runner, json={}).status_code
            ),
            daemon=True,
        )
        beating.start()
        beating.join(timeout=30)
        assert beats == [200], "the heartbeat was answered while the reads were held"
        assert held.began == 2, "two reads at a time; the others wait their turn"
        assert answers == [], "all of them still held"
    finally:  # failed or not, let every request end before the app shuts down
        held.release()
        for thread in submitting:
            thread.join(timeout=60)
    assert answers == [202] * BURST, "each submission, once read, created its job"


def test_a_read_that_waits_too_long_is_503_and_nothing_is_created(farm: Farm, held: Held) -> None:
    """With every turn taken for longer than a read may wait, a tiled submission and a
    blend-info are told to come back (503, Retry-After), and no job is made of it."""
    context = manager_of(farm)
    context.file_reads = FileReads(at_once=1, wait=0.5)
    first: list[int] = []
    holding = threading.Thread(
        target=lambda: first.append(
            post_stand_in(farm.client, farm.admin, tiles=TILES).status_code
        ),
        daemon=True,
    )
    holding.start()
    until(lambda: held.began == 1, "the first read began")

    second = post_stand_in(farm.client, farm.admin, tiles=TILES)
    assert second.status_code == 503, second.text
    assert "busy reading other uploaded files" in second.json()["detail"]
    assert second.headers["Retry-After"].isdigit()
    assert second.json()["detail"].endswith(
        f"send it again in {second.headers['Retry-After']} s"
    ), "the message and the header name the same wait"

    info = farm.client.post(
        "/api/blend-info",
        headers=farm.admin,
        files={"file": ("scene.blend", FAKE_BLEND, "application/octet-stream")},
    )
    assert info.status_code == 503, info.text
    assert "busy reading other uploaded files" in info.json()["detail"]
    assert info.headers["X-Blob-Sha256"], "the stored file can still be named by a job"
    assert info.headers["Retry-After"].isdigit()

    untiled = post_stand_in(farm.client, farm.admin)
    assert untiled.status_code == 202, "a job with no file to read does not wait"

    held.release()
    holding.join(timeout=30)
    assert first == [202]
    jobs = farm.client.get("/api/jobs", headers=farm.admin).json()
    assert len(jobs) == 2, "the first job and the untiled one; not the refused one"


def test_the_client_waits_for_a_submission_as_long_as_the_manager_may_take() -> None:
    """A tiled job's POST may wait its turn, then read: a client that gave up sooner would
    leave a job created behind its back, and its user, sending again, two jobs."""
    assert isinstance(CREATE_TIMEOUT, httpx.Timeout) and CREATE_TIMEOUT.read is not None
    assert CREATE_TIMEOUT.read > WAIT_SECONDS + UNTRUSTED_WALL_SECONDS
