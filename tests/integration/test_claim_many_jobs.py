"""The claim with many jobs queued, through the API on a real manager (real SQLite).

The claim reads the queue a priority at a time and, within it, a slice at a time
(`claim.FIRST_SLICE` jobs, then four times as many): each rule must hold for jobs past
those slices as for the first few, and the jobs ranked below the one a claim hands out
must cost it nothing (the claim's cost must not grow with the queue).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.scheduling import claim as claim_module
from farmhand.manager.scheduling.claim import FIRST_SLICE
from farmhand.manager.scheduling.eligibility import fits
from tests.integration.conftest import Farm, make_settings
from tests.integration.postgres import fresh_database, postgres_bin
from tests.integration.test_scheduling import add_user, claimed, farm_for, runner, submit

pytestmark = pytest.mark.xdist_group("postgres")

PAST_TWO_SLICES = FIRST_SLICE + 4 * FIRST_SLICE + 5
"""More jobs than the claim's first two slices hold."""


@pytest.fixture(params=["sqlite", "postgresql"])
def farm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Farm]:
    """A farm on SQLite, and one on PostgreSQL: the ranking is SQL, written once for both."""
    database: dict[str, str] = {}
    if request.param == "postgresql":
        if postgres_bin() is None:
            pytest.skip("Debian's postgresql is not installed")
        server = request.getfixturevalue("postgres_url")
        database["database_url"] = fresh_database(server, f"farm_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", **database)
    with TestClient(create_app(settings)) as client:
        yield farm_for(client, settings)


def test_priority_past_many_jobs_the_worker_cannot_take(farm: Farm) -> None:
    """Priority holds past the slices: a worker passes by more than two slices of
    higher-priority jobs it does not fit, takes the oldest job of the next priority, then
    the next, and the lower priority only after them."""
    gpu_jobs = [
        submit(farm, "1-1", priority=70, required_tags=["gpu"]) for _ in range(PAST_TWO_SLICES)
    ]
    low = submit(farm, "1-1", priority=40)
    middle = [submit(farm, "1-1", priority=60) for _ in range(2)]
    plain = runner(farm, "plain")
    assert [claimed(farm, plain)["job_id"] for _ in range(3)] == [*middle, low]
    gpu = runner(farm, "gpu", tags=["gpu"])
    assert claimed(farm, gpu)["job_id"] == gpu_jobs[0], "the gpu jobs went nowhere else"


def test_fair_share_and_age_past_many_jobs_of_one_user(farm: Farm) -> None:
    """Fair share holds with one user's jobs filling several slices: a second user's job,
    the newest of all, goes second (once the first user holds a worker); when both hold
    one, the oldest job goes first again."""
    alice, bob = add_user(farm, "alice"), add_user(farm, "bob")
    alice_jobs = [submit(farm, "1-2", headers=alice) for _ in range(PAST_TWO_SLICES)]
    bob_job = submit(farm, "1-2", headers=bob)
    got = [claimed(farm, runner(farm, f"w{n}"))["job_id"] for n in range(4)]
    assert got == [alice_jobs[0], bob_job, alice_jobs[0], bob_job]


def test_the_preferred_job_past_many_older_jobs(farm: Farm) -> None:
    """The job a worker prefers goes before older jobs equal on priority and fair share
    however many there are; not before a job whose owner holds fewer workers."""
    alice, bob = add_user(farm, "alice"), add_user(farm, "bob")
    alice_jobs = [submit(farm, "1-4", headers=alice) for _ in range(PAST_TWO_SLICES)]
    newest = alice_jobs[-1]
    first = runner(farm, "w1")
    answer = farm.client.get(
        "/api/runner/tasks", params={"wait": 0, "prefer_job": newest}, headers=first
    )
    assert answer.json()["job_id"] == newest
    bob_job = submit(farm, "1-2", headers=bob)
    second = runner(farm, "w2")
    answer = farm.client.get(
        "/api/runner/tasks", params={"wait": 0, "prefer_job": newest}, headers=second
    )
    assert answer.json()["job_id"] == bob_job, "bob holds no worker, alice one"


def test_capped_jobs_are_passed_by_past_the_first_slice(farm: Farm) -> None:
    """Jobs at their `max_workers` are passed by, more than a slice of them, to the next
    job that may take a worker."""
    capped = [submit(farm, "1-2", max_workers=1) for _ in range(FIRST_SLICE + 2)]
    free = submit(farm, "1-2")
    got = [claimed(farm, runner(farm, f"w{n}"))["job_id"] for n in range(len(capped) + 2)]
    assert got == [*capped, free, free]


def test_a_claim_looks_at_no_job_ranked_below_the_one_it_hands_out(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many jobs ranked below the one handed out (lower priority; the same priority, but
    their owner already holds a worker) are left to the database's ranking: the claim
    checks the fit of at most its first slice of jobs, not of every job in the queue (it
    used to check all 171 here, decoding each one's settings, on every claim)."""
    alice, bob = add_user(farm, "alice"), add_user(farm, "bob")
    for _ in range(PAST_TWO_SLICES):
        submit(farm, "1-1", priority=30)
    alice_jobs = [submit(farm, "1-2", headers=alice) for _ in range(PAST_TWO_SLICES)]
    assert claimed(farm, runner(farm, "w1"))["job_id"] == alice_jobs[0]
    bob_job = submit(farm, "1-1", headers=bob)
    looked_at: list[dict[str, Any]] = []

    def counting_fits(worker: Any, settings: dict[str, Any], *args: Any) -> bool:
        looked_at.append(settings)
        return fits(worker, settings, *args)

    monkeypatch.setattr(claim_module, "fits", counting_fits)
    assert claimed(farm, runner(farm, "w2"))["job_id"] == bob_job
    assert 0 < len(looked_at) <= FIRST_SLICE, f"looked at {len(looked_at)} jobs"
