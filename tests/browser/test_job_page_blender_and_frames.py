"""The job page shows the Blender series a job is pinned to, next to the one that saved
its file, and a task's frames as `farmhand submit --frames` takes them (`1-10x3`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import claim, expect, manager_farm, register, sign_in
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


# A scripted runner sends no heartbeats: a long timeout keeps it online.
farm = manager_farm(name="pin-farm", heartbeat_timeout=600.0)


def test_the_pinned_blender_and_stepped_frames_are_shown(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(
        api, name="stepped", frame_start=1, frame_end=10, frame_step=3, chunk_size=4
    )
    page = sign_in(browser, farm)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#stat-blender")).to_have_text("3.4")
    expect()(page.locator("#stat-pinned-box")).to_be_hidden()  # nothing claimed yet

    who = register(api, farm, "w5", blender_versions=["5.0.1"], task_types=["render"])
    task = claim(api, who)
    assert task["frames"] == [1, 4, 7, 10]
    page.reload()
    expect()(page.locator("#stat-pinned")).to_have_text("5.0")
    expect()(page.locator("#stat-pinned-box")).to_contain_text("Renders with")
    row = page.locator(f'#tasks tr[data-task-id="{task["task_id"]}"]')
    expect()(row).to_contain_text("1-10x3")
    page.context.close()
