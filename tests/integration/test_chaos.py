"""Chaos: a four-worker job while workers and the manager are killed and frozen at random.

Each run (one per seed) renders a real job with real Blender while a driver, at random
moments, SIGKILLs a worker (and starts it again), SIGKILLs the manager (and restarts
it on the same database), or freezes a worker with SIGSTOP for a while (its network
path "pauses"; long enough and the manager gives its task to someone else) before
SIGCONT; each kind at least once per run. The run number and what was done are
printed. Every run must end with the job completed, every frame stored exactly once as
a valid image, and no task left active.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobSettings, JobStatus
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow, pytest.mark.xdist_group("chaos")]

FRAMES = 16
WORKERS = 4
ACTIONS = 5
BLENDER = "bpy"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(
        tmp_path_factory.mktemp("chaos") / "chaos.blend",
        "animated",
        width=64,
        height=48,
        frames=f"1-{FRAMES}",
        samples=16,
    )


def _job_done(farm: LocalFarm, job_id: int) -> bool:
    try:
        with farm.client() as client:
            return client.get_job(job_id).status in (
                JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED
            )  # fmt: skip
    except Exception:  # the manager may be down right now
        return False


KINDS = ["kill-worker", "kill-manager", "freeze-worker"]


def _plan(rng: random.Random) -> list[str]:
    """Every kind of trouble once (in a random order), then random ones."""
    first = rng.sample(KINDS, len(KINDS))
    return first + [rng.choice(KINDS) for _ in range(ACTIONS - len(KINDS))]


def _chaos(farm: LocalFarm, rng: random.Random, job_id: int) -> list[str]:
    done: list[str] = []
    for action in _plan(rng):
        time.sleep(rng.uniform(0.5, 2.5))
        if _job_done(farm, job_id):
            break
        workers = [c for c in farm.children if c.name.startswith("w") and c.running]
        if action == "kill-worker" and workers:
            victim = rng.choice(workers)
            victim.kill()
            farm.children.remove(victim)
            time.sleep(rng.uniform(0.2, 2.0))
            farm.start_worker(victim.name, blender=BLENDER)
            done.append(f"SIGKILL {victim.name}")
        elif action == "kill-manager":
            assert farm.manager is not None
            farm.manager.kill()
            farm.children.remove(farm.manager)
            time.sleep(rng.uniform(0.2, 2.0))
            farm.start_manager()
            done.append("SIGKILL manager")
        elif workers:
            victim = rng.choice(workers)
            pause = rng.uniform(1.0, 6.0)  # past the 3 s heartbeat timeout, sometimes
            assert victim.process is not None
            victim.process.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            victim.process.send_signal(signal.SIGCONT)
            done.append(f"SIGSTOP {victim.name} for {pause:.1f}s")
    return done


SEEDS = [1, 2, 3]


@pytest.mark.parametrize("seed", SEEDS)
def test_job_survives_chaos(
    tmp_path: Path, scene: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    run = SEEDS.index(seed) + 1
    with local_farm(tmp_path, heartbeat_timeout=3.0) as farm:
        farm.start_manager()
        for n in range(WORKERS):
            farm.start_worker(f"w{n}", blender=BLENDER)
        settings = JobSettings(frame_start=1, frame_end=FRAMES, chunk_size=2, max_attempts=10)
        with farm.client() as client:
            job_id = client.submit_blend(scene, settings).id
        actions = _chaos(farm, rng, job_id)
        report = (
            f"chaos run {run} of {len(SEEDS)} (seed {seed}): {len(actions)} actions: "
            f"{'; '.join(actions) or 'none (the job finished first)'}"
        )
        with capsys.disabled():  # shown in the test output, pass or fail
            print(f"\n{report}")
        wait_for(lambda: _job_done(farm, job_id), 300, "the job to finish")
        with farm.client() as client:
            job = client.get_job(job_id)
            assert job.status is JobStatus.COMPLETED, f"{report}: {job.status_reason}"
            orphans = [t.index for t in job.tasks if t.status == "active" and t.worker is None]
            assert not orphans, f"{report}: tasks active with no worker: {orphans}"
            assert all(task.status == "completed" for task in job.tasks), report
            outputs = [f for f in client.list_files(job_id) if f.kind == "output"]
            frames = sorted(f.frame for f in outputs if f.frame is not None)
            assert frames == list(range(1, FRAMES + 1)), f"{report}: every frame exactly once"
            written = client.download_outputs(job_id, tmp_path / "out")
        assert len(written) == FRAMES
        for path in written:
            verify_image(path, 64, 48)
