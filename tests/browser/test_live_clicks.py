"""Clicks in tables that refresh themselves while the mouse button is down.

A click is a press and a release on the same element. When a live refresh replaced a
table's rows between the two, the pressed button was gone at the release and the browser
fired no click: on a busy farm Disable, Sleep schedule…, Cancel or Requeue sometimes did
nothing. Each test here presses a button, makes the manager announce a change (a
heartbeat, a task's progress), waits until the page shows it, and only then releases.

No Blender here: the runners are scripted HTTP calls (register, heartbeat, claim,
progress) as in test_runner_controls.py, and jobs are submitted with a stand-in .blend
the manager never opens.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    claim,
    expect,
    manager_farm,
    register,
    shoot,
    sign_in,
    task_status,
)
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

# For `page.evaluate(..., selector)`: remembers the elements `selector` finds now, so
# that `SAME_NODES` can tell later whether a refresh kept them or made new ones.
REMEMBER = "(selector) => { window.remembered = [...document.querySelectorAll(selector)]; }"
# For `page.evaluate(..., selector)`: how many of the remembered elements `selector`
# still finds, as the very same nodes, and how many it finds in all.
SAME_NODES = """(selector) => {
    const now = [...document.querySelectorAll(selector)];
    return [now.filter((el) => window.remembered.includes(el)).length, now.length];
}"""


# Scripted runners send no heartbeats of their own: a long timeout keeps them online.
farm = manager_farm(name="live-clicks-farm", heartbeat_timeout=600.0)


def script_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def press(page: Any, button: Any) -> None:
    """The mouse button down (and held) over the middle of `button`."""
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()


def test_a_press_held_while_the_runners_refresh_still_clicks(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    busy = register(api, farm, "busy-box")
    register(api, farm, "quiet-box")
    page = sign_in(browser, farm)
    errors = script_errors(page)
    page.goto(farm.url + "/runners")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    busy_row = page.locator('#runners tr[data-runner-name="busy-box"]')
    expect()(page.locator("#runners tbody tr[data-runner-id]")).to_have_count(2)
    heartbeat = busy_row.locator("td[data-heartbeat]")
    before = heartbeat.get_attribute("data-heartbeat")
    page.evaluate(REMEMBER, "#runners button")

    # Press "Sleep schedule…" of busy-box; it heartbeats, its row shows the new
    # heartbeat; then the release opens the editor for busy-box.
    press(page, page.get_by_role("button", name="Sleep schedule of busy-box"))
    assert api.post("/api/runner/heartbeat", json={}, headers=busy).status_code == 200
    expect()(heartbeat).not_to_have_attribute("data-heartbeat", before or "")
    page.mouse.up()
    expect()(page.locator("#sleep-dialog")).to_be_visible()
    expect()(page.locator("#sleep-runner")).to_have_text("busy-box")

    # Nothing was made anew: not the buttons of busy-box, whose heartbeat changed, and
    # not those of quiet-box, which did not change at all.
    assert page.evaluate(SAME_NODES, "#runners button") == [6, 6]
    page.keyboard.press("Escape")
    expect()(page.locator("#sleep-dialog")).to_be_hidden()
    expect()(page.get_by_role("button", name="Sleep schedule of busy-box")).to_be_focused()
    shoot(page, "live-clicks-01-runners")
    assert errors == []
    page.context.close()


def test_a_press_held_while_a_task_renders_still_clicks(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(api, name="live shot", frame_start=1, frame_end=3, chunk_size=1)
    runner = register(api, farm, "render-box")
    rendering = claim(api, runner)
    page = sign_in(browser, farm)
    errors = script_errors(page)

    # The jobs list: the job's link stays the same element while the job moves on.
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    job_row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    expect()(job_row.locator("td[data-label=Frames]")).to_have_text("0/3")
    page.evaluate(REMEMBER, "#jobs a")
    progress = f"/api/runner/tasks/{rendering['task_id']}/progress"
    answer = api.post(progress, headers=runner, json={"frames_done": 1, "frame": 2})
    assert answer.status_code == 200, answer.text
    expect()(job_row.locator("td[data-label=Frames]")).to_have_text("1/3")
    assert page.evaluate(SAME_NODES, "#jobs a") == [1, 1]

    # The job's page: press Cancel of a task that waits while the rendering one moves on
    # to another sample, release once its row shows it: the waiting task is canceled.
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    rows = page.locator("#tasks tbody tr[data-task-id]")
    expect()(rows).to_have_count(3)
    tasks = api.get(f"/api/jobs/{job_id}").json()["tasks"]
    waiting = next(t for t in tasks if t["status"] == "queued")
    busy_row = page.locator(f'#tasks tr[data-task-id="{rendering["task_id"]}"]')
    answer = api.post(progress, headers=runner, json={"frame": 2, "sample": 3, "samples_total": 16})
    assert answer.status_code == 200, answer.text
    expect()(busy_row).to_contain_text("frame 2 · sample 3/16")
    page.evaluate(REMEMBER, "#tasks button")

    press(page, page.get_by_role("button", name=f"Cancel task {waiting['index']}"))
    answer = api.post(progress, headers=runner, json={"frame": 2, "sample": 9, "samples_total": 16})
    assert answer.status_code == 200, answer.text
    expect()(busy_row).to_contain_text("frame 2 · sample 9/16")
    assert page.evaluate(SAME_NODES, "#tasks button") == [6, 6], "no button was made anew"
    page.mouse.up()

    waiting_row = page.locator(f'#tasks tr[data-task-id="{waiting["id"]}"]')
    expect()(waiting_row.locator(".badge")).to_have_text("canceled")
    assert task_status(api, job_id, waiting["id"]) == "canceled"
    assert task_status(api, job_id, rendering["task_id"]) == "active"
    shoot(page, "live-clicks-02-tasks")
    assert errors == []
    page.context.close()
