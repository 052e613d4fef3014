"""The runners page at every width from a phone to a wide screen: each runner's controls
are on screen without scrolling, and no table scrolls sideways inside its frame.

Between a phone (cards) and a wide laptop the runners table was wider than its frame, so
the Control column, an admin's reason to be on the page, sat off-screen until the table
was scrolled: at 1024 px (a common laptop, a classroom projector) no button showed. The
jobs list and a job's page are measured at the same widths too. The widths: a phone,
the edges of the middle layout (641 and 1199 px), the widths in between people use
(800, 1024) and two wide screens.

No Blender: the runners are scripted HTTP calls (register, claim, release) as in
test_runner_controls.py; jobs are a stand-in .blend the manager never opens.
Screenshots: `runners-width-*.png`, `jobs-width-*.png`, `job-width-*.png`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    claim,
    days_away_from_now,
    expect,
    manager_farm,
    register,
    release,
    shoot,
    sign_in,
)
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

WIDTHS = [390, 641, 800, 1024, 1199, 1280, 1920]
WORKSTATION = {
    "cpu": "AMD Ryzen 9 7950X 16-Core Processor",
    "cores": 32,
    "ram_bytes": 64 * 2**30,
    "hostname": "artist-workstation-0042.studio.lan",
    "tags": ["gpu", "highmem", "studio-b"],
    "device": "CUDA",
    "gpu": 0,
    "blender_devices": ["CUDA: NVIDIA GeForce RTX 4090"],
    "gpus": ["NVIDIA GeForce RTX 4090"],
    "blender_versions": ["4.2.1", "3.6.5"],
    "address": "192.168.1.20",
}
RENDER_NODE = {
    "cpu": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
    "cores": 64,
    "ram_bytes": 256 * 2**30,
    "hostname": "rn07.farm.internal",
    "tags": ["cpu-only"],
    "blender_versions": ["4.2.1"],
}
LAPTOP = {"cpu": "Apple M2", "cores": 8, "ram_bytes": 16 * 2**30, "blender_versions": ["4.1.0"]}
OFFICE_ZONE = "America/Argentina/ComodRivadavia"


def office_hours() -> dict[str, Any]:
    """A schedule that will stop the busy runner's task, but not while the test runs."""
    days = days_away_from_now(OFFICE_ZONE, 4)
    return {
        "timezone": OFFICE_ZONE,
        "windows": [
            {"days": days[:3], "start": "09:00", "end": "18:00"},
            {"days": days[3:], "start": "22:00", "end": "06:00"},
        ],
        "when": "now",
    }


ALWAYS_ASLEEP = {
    "timezone": "UTC",
    "windows": [
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "00:00",
            "end": "24:00",
        }
    ],
}
# For `page.evaluate`: in one go (a live refresh may rewrite the rows between two
# measurements), the runners' control buttons that are not wholly inside the window
# sideways, and the tables whose frame scrolls sideways.
MEASURE = """() => {
    const outside = [...document.querySelectorAll("#runners td.controls button")]
        .filter((b) => { const box = b.getBoundingClientRect();
                         return !box.width || box.left < 0 || box.right > window.innerWidth; })
        .map((b) => `${b.closest("tr").dataset.runnerName}: ${b.textContent}`);
    const scrolling = [...document.querySelectorAll(".table-wrap")]
        .filter((f) => f.offsetParent !== null && f.scrollWidth > f.clientWidth)
        .map((f) => `${f.querySelector("table").id} ${f.scrollWidth} > ${f.clientWidth}`);
    const buttons = document.querySelectorAll("#runners td.controls button").length;
    return { outside, scrolling, buttons };
}"""

# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = manager_farm(name="runners-widths-farm", heartbeat_timeout=600.0)


def runner_id(api: httpx.Client, name: str) -> int:
    return int(next(r["id"] for r in api.get("/api/admin/runners").json() if r["name"] == name))


def admin(
    api: httpx.Client, name: str, path: str, body: dict[str, Any], verb: str = "POST"
) -> None:
    """An admin API call on the runner `name` (an action, its sleep schedule)."""
    answer = api.request(verb, f"/api/admin/runners/{runner_id(api, name)}/{path}", json=body)
    assert answer.status_code == 200, answer.text


def a_farm_of_runners(api: httpx.Client, farm: LocalFarm) -> int:
    """Six runners in every state the page shows (busy with a schedule that stops its
    task, draining, idle after giving a task back for a full disk, asleep, disabled, a
    long-named idle one); the busy job's id."""
    job_id = submit_stand_in(
        api, name="Shot 042: lighting pass, final v3", frame_start=1, frame_end=40, chunk_size=5
    )
    busy = register(api, farm, "artist-workstation-0042", **WORKSTATION)
    claim(api, busy)
    admin(api, "artist-workstation-0042", "sleep-schedule", office_hours(), "PUT")
    draining = register(api, farm, "gpu-box-03", **WORKSTATION | {"hostname": "gpu-box-03.lan"})
    claim(api, draining)
    admin(api, "gpu-box-03", "actions", {"action": "disable", "when": "after-task"})
    gave_back = register(api, farm, "render-node-07", **RENDER_NODE)
    task = claim(api, gave_back)
    release(
        api,
        gave_back,
        task,
        "cannot work: [Errno 28] No space left on device: "
        "'/var/lib/farmhand/work/job-1/task-17/frames'",
    )
    register(api, farm, "render-node-with-a-rather-long-name-for-the-rack-b-0099", **RENDER_NODE)
    register(api, farm, "night-owl", **LAPTOP)
    admin(api, "night-owl", "sleep-schedule", ALWAYS_ASLEEP, "PUT")
    register(api, farm, "old-laptop", **LAPTOP)
    admin(api, "old-laptop", "actions", {"action": "disable", "when": "now"})
    return job_id


@pytest.mark.parametrize("width", WIDTHS)
def test_every_runners_controls_are_on_screen(
    browser: Any, farm: LocalFarm, api: httpx.Client, width: int
) -> None:
    job_id = a_farm_of_runners(api, farm)
    page = sign_in(browser, farm)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(farm.url + "/runners")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    draining = page.locator('#runners tr[data-runner-name="gpu-box-03"]')
    expect()(draining).to_contain_text("draining")
    busy = page.locator('#runners tr[data-runner-name="artist-workstation-0042"] .status')
    expect()(busy).to_have_text("busy")
    expect()(page.locator("#runners tbody tr[data-runner-id]")).to_have_count(6)
    shoot(page, f"runners-width-{width}")
    measured = page.evaluate(MEASURE)
    # Six runners: Disable/Enable (or two for the busy and the draining one), Sleep
    # schedule… and Delete each.
    assert measured["buttons"] == 20, measured
    assert measured["outside"] == [], f"controls off-screen at {width} px"
    assert measured["scrolling"] == [], f"a table scrolls sideways at {width} px"
    assert page.evaluate(NO_SIDEWAYS_SCROLL), f"the page scrolls sideways at {width} px"

    # The jobs list and the busy job's page at the same width.
    for path, name in (("/", "jobs"), (f"/jobs/{job_id}", "job")):
        page.goto(farm.url + path)
        expect()(page.locator("#live")).to_have_attribute("data-state", "live")
        page.wait_for_selector("table tbody tr[data-job-id], #tasks tbody tr[data-task-id]")
        shoot(page, f"{name}-width-{width}")
        assert page.evaluate(MEASURE)["scrolling"] == [], f"{path} at {width} px"
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"{path} scrolls sideways at {width} px"
    page.context.close()
