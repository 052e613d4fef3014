"""A worker of an older farmhand, still running across a manager upgrade, gets no task.

Without a word on what a worker speaks, the manager handed an old worker (from before
tiled stills) every tile of a still: it rendered none, each completion was refused, the
tiles came back to it every 20 s with attempts past `--max-attempts`, and the job never
ended. Now a worker declares its protocol (`WorkerCapabilities.protocol`); one below the
manager's minimum is refused work (426, saying to upgrade it), listed as too old, and not
counted as a worker that could run a job, so the job says why it waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farmhand.cli.app import app
from farmhand.localfarm import LocalFarm
from farmhand.manager.app import create_app
from farmhand.shared.protocol import MIN_WORKER_PROTOCOL, WORKER_PROTOCOL
from tests.integration.conftest import (
    Farm,
    cli_at,
    make_settings,
    submit_stand_in,
    upload_frames,
)
from tests.integration.test_claim_next import claim, complete, submit

OLD_WORKER = {"hostname": "old-box", "cores": 8, "blender_versions": ["3.4.1"]}
"""What a worker from before the protocol field sends: its capabilities, no protocol."""


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def register(client: Any, token: str, name: str, caps: dict[str, Any]) -> dict[str, str]:
    answer = client.post(
        "/api/runner/register", json={"token": token, "name": name, "capabilities": caps}
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def job(farm: Farm, job_id: int) -> dict[str, Any]:
    return farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()  # type: ignore[no-any-return]


TOO_OLD = (
    f"this worker runs an older farmhand (protocol 0) than this manager needs "
    f"({MIN_WORKER_PROTOCOL}): upgrade it"
)


def test_an_old_worker_gets_no_task_and_the_job_says_why_it_waits(farm: Farm) -> None:
    job_id = submit(farm, 2)
    old = register(farm.client, farm.runner_token, "old-box", OLD_WORKER)

    refused = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=old)

    assert refused.status_code == 426, refused.text
    assert refused.json()["detail"] == TOO_OLD
    summary = job(farm, job_id)
    assert {task["status"] for task in summary["tasks"]} == {"queued"}
    assert summary["status_reason"] is not None
    assert "too old, upgrade them" in summary["status_reason"]
    listed = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    assert [r["capabilities"]["protocol"] for r in listed] == [0]

    # The same machine, upgraded: it declares the protocol and gets work.
    new = register(farm.client, farm.runner_token, "new-box", {**OLD_WORKER, "protocol": 1})
    assert claim(farm, new)["job_id"] == job_id
    assert job(farm, job_id)["status_reason"] is None


def test_a_heartbeat_declaring_an_old_protocol_stops_the_work(farm: Farm) -> None:
    job_id = submit(farm, 2)
    runner = farm.register_runner("w1")  # no capabilities: a script, taken as current
    first = claim(farm, runner)
    stale = {"capabilities": {**OLD_WORKER, "protocol": 0}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=stale).is_success

    # The task it holds may be finished, but no next one comes with it nor after it.
    upload_frames(farm, runner, first)
    done = complete(farm, runner, first, next_task=True)
    assert done.status_code == 200, done.text
    assert done.json()["task_status"] == "completed"
    assert done.json()["next_task"] is None
    refused = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
    assert refused.status_code == 426, refused.text
    assert refused.json()["detail"] == TOO_OLD
    assert [t["status"] for t in job(farm, job_id)["tasks"]].count("queued") == 1

    current = {"capabilities": {**OLD_WORKER, "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=current).is_success
    assert claim(farm, runner)["job_id"] == job_id


def test_farmhand_runners_says_which_runner_is_too_old(
    manager: LocalFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cli_at(manager, monkeypatch) as api:
        submit_stand_in(api, frame_start=1, frame_end=1)
        with httpx.Client(base_url=manager.url) as client:
            register(client, manager.runner_token, "old-box", OLD_WORKER)
            register(client, manager.runner_token, "new-box", {"protocol": WORKER_PROTOCOL})

        result = CliRunner().invoke(app, ["runners"])

        assert result.exit_code == 0, result.output
        rows = {
            box: line
            for line in result.output.splitlines()
            for box in ("old-box", "new-box")
            if box in line
        }
        assert "too old: upgrade" in rows["old-box"], result.output
        assert "too old" not in rows["new-box"], result.output
