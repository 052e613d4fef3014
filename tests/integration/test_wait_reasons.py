"""Why a job waits, through the API: the reason names what no available worker offers,
or that no one worker offers all the job asks for, never a requirement some worker does
meet (`eligibility.WaitReasons`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.db.models import Job, Worker
from farmhand.manager.scheduling.eligibility import WaitReasons
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration import test_scheduling as scheduling
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.test_blender_progress import FRAMES, detail
from tests.integration.test_manager_api import claim
from tests.integration.test_reaper_resilience import ALWAYS as ALWAYS_ASLEEP
from tests.integration.test_tiles_protocol import RANGE, send_tile, submit_still


def runner(farm: Farm, name: str, **caps: Any) -> dict[str, str]:
    answer = farm.client.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": name,
            "capabilities": {"protocol": WORKER_PROTOCOL, **caps},
        },
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def listed(farm: Farm, job_id: int) -> str | None:
    jobs = farm.client.get("/api/jobs", headers=farm.admin).json()
    reason: str | None = next(j for j in jobs if j["id"] == job_id)["status_reason"]
    return reason


def put_to_sleep(farm: Farm, name: str) -> None:
    """The runner's sleep schedule: every day, all day, applied now."""
    listing = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    runner_id = next(r["id"] for r in listing if r["name"] == name)
    asleep = farm.client.put(
        f"/api/admin/runners/{runner_id}/sleep-schedule", headers=farm.admin, json=ALWAYS_ASLEEP
    )
    assert asleep.status_code == 200, asleep.text


def test_the_reason_names_what_no_worker_has_not_a_tag_another_has(farm: Farm) -> None:
    # The reproduction: gpu-box-1 has no tags, gpu-box-2 has highmem; both render on CPU.
    plain = runner(farm, "gpu-box-1", blender_versions=["5.0.1"])
    tagged = runner(farm, "gpu-box-2", blender_versions=["5.0.1"], tags=["gpu", "highmem"])
    job_id = submit_stand_in(
        farm.client, farm.admin, device="OPTIX", required_tags=["highmem"], **FRAMES
    )
    ranged = submit_stand_in(
        farm.client,
        farm.admin,
        device="OPTIX",
        blender_version=">=4.2,<5",
        required_tags=["highmem"],
        **FRAMES,
    )
    assert claim(farm, plain) is None and claim(farm, tagged) is None
    assert detail(farm, job_id).status_reason == "waiting: no worker renders on OPTIX"
    assert listed(farm, job_id) == "waiting: no worker renders on OPTIX"
    # No worker has OPTIX nor a Blender in the range: both are said, the tag is not.
    both = (
        "waiting: no worker renders on OPTIX; the job needs a Blender in the range >=4.2,<5; "
        "the online workers have 5.0.1"
    )
    assert detail(farm, ranged).status_reason == both
    assert listed(farm, ranged) == both


def test_when_each_need_is_met_by_some_worker_the_reason_says_none_meets_all(
    farm: Farm,
) -> None:
    runner(farm, "gpu-box-1", blender_versions=["5.0.1"], device="OPTIX")
    runner(farm, "gpu-box-2", blender_versions=["5.0.1"], tags=["gpu", "highmem"])
    job_id = submit_stand_in(
        farm.client, farm.admin, device="OPTIX", required_tags=["highmem"], **FRAMES
    )
    said = "waiting: no one worker has both tag highmem and device OPTIX"
    assert detail(farm, job_id).status_reason == said
    assert listed(farm, job_id) == said

    optix = runner(farm, "gpu-box-3", blender_versions=["5.0.1"], device="OPTIX", tags=["highmem"])
    assert detail(farm, job_id).status_reason is None
    assert claim(farm, optix) is not None


def worker(**caps: Any) -> Worker:
    return Worker(name="w", capabilities={"protocol": WORKER_PROTOCOL, **caps})


def job(**settings: Any) -> Job:
    return Job(settings=settings, blender_saved=None, blender_pinned=None)


def test_reasons_name_every_thing_nobody_has_in_one_bounded_line() -> None:
    workers = [worker(tags=["a"]), worker(tags=["b"], device="CUDA")]
    reasons = WaitReasons(workers)
    tags = [f"t{n:02}" for n in range(32)]
    assert reasons.reason(job(required_tags=["a", "b", "zz", "yy"])) == (
        "waiting: no worker has the tags yy, zz"
    )
    long = reasons.reason(job(required_tags=tags, device="OPTIX"))
    assert long == (
        "waiting: no worker has the tags t00, t01, t02, t03, t04, t05 and 26 more; "
        "no worker renders on OPTIX"
    )
    assert reasons.reason(job(required_tags=["a"], device="CUDA")) == (
        "waiting: no one worker has both tag a and device CUDA"
    )
    assert reasons.reason(job(required_tags=["a", "b"], device="CUDA")) == (
        "waiting: no one worker has all of tag a, tag b and device CUDA"
    )
    assert reasons.reason(job(required_tags=["b"], device="CUDA")) is None
    assert reasons.reason(job(), "video") == "waiting: no worker runs video tasks"
    assert WaitReasons([]).reason(job(device="OPTIX")) is None, "no worker: nothing to say"


def test_alike_workers_are_looked_at_once_and_alike_jobs_answered_once() -> None:
    looks: list[int] = []

    class Counted(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            if key == "device":
                looks.append(1)
            return super().get(key, default)

    workers = [
        Worker(name=f"w{n}", capabilities=Counted(tags=["a"], protocol=WORKER_PROTOCOL))
        for n in range(500)
    ]
    reasons = WaitReasons(workers)
    built = len(looks)
    for _ in range(200):
        assert reasons.reason(job(device="OPTIX")) == "waiting: no worker renders on OPTIX"
    assert len(looks) - built == 1, "one kind of worker, one kind of job: one check"


def test_workers_that_could_run_the_job_but_may_not_work_now_are_named(farm: Farm) -> None:
    """The gpu workers are asleep or disabled: the job waits, and the reason says so by
    name. It said "no worker has the tag gpu", which sent the admin off to re-tag
    machines that have it."""
    runner(farm, "plain", blender_versions=["5.0.1"])
    runner(farm, "g1", blender_versions=["5.0.1"], tags=["gpu"])
    runner(farm, "g2", blender_versions=["5.0.1"], tags=["gpu"])
    job_id = submit_stand_in(farm.client, farm.admin, required_tags=["gpu"], **FRAMES)
    put_to_sleep(farm, "g1")
    scheduling.act(farm, scheduling.runners(farm)["g2"]["id"], "disable", "now")
    said = (
        "waiting: among the workers that may work now, no worker has the tag gpu; "
        "g1 (asleep), g2 (disabled) could run it"
    )
    assert detail(farm, job_id).status_reason == said
    assert listed(farm, job_id) == said


def test_a_resting_worker_is_named_only_if_it_could_run_the_job() -> None:
    awake = [worker(tags=["a"])]
    resting = [
        Worker(name="nap", capabilities={"protocol": WORKER_PROTOCOL, "tags": ["gpu"]},
               admin_state="enabled", asleep=True, status="idle"),
        Worker(name="gone", capabilities={"protocol": WORKER_PROTOCOL, "tags": ["gpu"],
                                          "device": "CUDA"},
               admin_state="enabled", asleep=False, status="offline"),
    ]  # fmt: skip
    reasons = WaitReasons(awake, resting)
    assert reasons.reason(job(required_tags=["gpu"], device="CUDA")) == (
        "waiting: among the workers that may work now, no worker has the tag gpu; "
        "no worker renders on CUDA; gone (offline) could run it"
    )
    assert reasons.reason(job(required_tags=["gpu"])) == (
        "waiting: among the workers that may work now, no worker has the tag gpu; "
        "nap (asleep), gone (offline) could run it"
    )
    assert reasons.reason(job(required_tags=["zz"])) == "waiting: no worker has the tag zz"
    assert WaitReasons([], resting).reason(job(required_tags=["gpu"])) == (
        "waiting: no worker may work now; nap (asleep), gone (offline) could run it"
    )
    assert WaitReasons([], []).reason(job(required_tags=["gpu"])) is None


def test_a_resting_worker_blocklisted_from_the_job_is_not_named() -> None:
    """g1 failed the job's renders until it was blocklisted, then fell asleep: waking it
    would not help, so it is not offered as one that could run them."""
    g1 = Worker(id=1, name="g1", capabilities={"protocol": WORKER_PROTOCOL, "tags": ["gpu"]},
                admin_state="enabled", asleep=True, status="idle")  # fmt: skip
    g2 = Worker(id=2, name="g2", capabilities={"protocol": WORKER_PROTOCOL, "tags": ["gpu"]},
                admin_state="disabled", asleep=False, status="idle")  # fmt: skip
    shot = Job(id=7, settings={"required_tags": ["gpu"]}, blender_saved=None, blender_pinned=None)
    other = Job(id=8, settings={"required_tags": ["gpu"]}, blender_saved=None, blender_pinned=None)
    reasons = WaitReasons([worker()], [g1, g2], {(7, "render"): {1}})
    assert reasons.reason(shot) == (
        "waiting: among the workers that may work now, no worker has the tag gpu; "
        "g2 (disabled) could run it"
    )
    assert reasons.reason(other) == (
        "waiting: among the workers that may work now, no worker has the tag gpu; "
        "g1 (asleep), g2 (disabled) could run it"
    ), "barred from job 7 only"


def test_a_job_every_awake_worker_is_blocklisted_from_says_so(tmp_path: Path) -> None:
    """w failed two of the job's tasks and is blocklisted; g1, the other worker, falls
    asleep. Nobody takes the job's tasks, and the reason says why and who could. It
    said nothing: the blocklisted worker counted as one that could run them."""
    settings = make_settings(tmp_path / "data", blocklist_threshold=2)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        farm = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)
        job_id = submit_stand_in(farm.client, farm.admin, **{**FRAMES, "max_attempts": 5})
        w = runner(farm, "w", blender_versions=["5.0.1"])
        runner(farm, "g1", blender_versions=["5.0.1"])
        for _ in range(2):
            task = claim(farm, w)
            assert task is not None
            failed = farm.client.post(
                f"/api/runner/tasks/{task['task_id']}/fail", headers=w, json={"reason": "boom"}
            )
            assert failed.status_code == 200, failed.text
        put_to_sleep(farm, "g1")
        said = (
            "waiting: every worker that may work now is blocklisted from its render tasks; "
            "g1 (asleep) could run it"
        )
        assert detail(farm, job_id).status_reason == said
        assert listed(farm, job_id) == said


def test_a_tiled_job_says_nothing_while_its_next_tiles_may_be_taken(farm: Farm) -> None:
    """r1 renders, r2 (merges and videos) is disabled. Frame 7's tiles done, its merge
    waits for r2; frame 8's tiles may still be taken by r1: the job is not stuck and
    says so by saying nothing. It said it waited for a merge worker, the first queued
    task's type. Once frame 8's tiles are done too, it does say so."""
    job_id = submit_still(farm, video=True, **RANGE)
    r1 = scheduling.runner(farm, "r1", types=["render"])
    scheduling.runner(farm, "r2", types=["merge", "video"])
    scheduling.act(farm, scheduling.runners(farm)["r2"]["id"], "disable", "now")
    send_tile(farm, r1, scheduling.claimed(farm, r1))
    send_tile(farm, r1, scheduling.claimed(farm, r1))
    assert detail(farm, job_id).status_reason is None
    assert listed(farm, job_id) is None
    send_tile(farm, r1, scheduling.claimed(farm, r1))
    send_tile(farm, r1, scheduling.claimed(farm, r1))
    said = (
        "waiting: among the workers that may work now, no worker runs merge tasks; "
        "r2 (disabled) could run it"
    )
    assert detail(farm, job_id).status_reason == said
    assert listed(farm, job_id) == said
