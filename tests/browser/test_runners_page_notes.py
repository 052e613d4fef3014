"""The web's runners page says which idle runner is not simply ready for work: one too
old for this manager (it gets no task), one that gave its task back (its machine cannot
work: a full disk) and has taken none since.

It showed such runners plain `idle` (only `farmhand runners` said `too old: upgrade`;
only the given-back task's `last_error` said why); it now shows the runner summary's
`status_note`, which the CLI reads too.

No Blender here: scripted runners register with the capabilities they declare.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    claim,
    expect,
    manager_farm,
    phone_like,
    register,
    release,
    shoot,
    sign_in,
)
from tests.browser.test_runner_controls import FITS_ITS_FRAME, WORKSTATION
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = manager_farm(name="runner-notes-farm", heartbeat_timeout=600.0)


def test_the_runners_page_says_which_runner_is_too_old(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    register(api, farm, "old-box", **(WORKSTATION | {"protocol": 0}))
    register(api, farm, "new-box", **WORKSTATION)

    page = sign_in(browser, farm)
    page.goto(f"{farm.url}/runners")
    old = page.locator('#runners tr[data-runner-name="old-box"]')
    new = page.locator('#runners tr[data-runner-name="new-box"]')
    expect()(old.locator("td").nth(1).locator(".badge")).to_have_text(["idle", "too old: upgrade"])
    expect()(old.locator("td.current")).to_have_text("no task")
    expect()(new.locator("td").nth(1).locator(".badge")).to_have_text(["idle"])
    expect()(new.locator("td.current")).to_have_text("idle")
    shoot(page, "runners-too-old-1280")
    # On a laptop the table still fits its frame (test_runner_controls.py).
    assert page.evaluate(FITS_ITS_FRAME, "#runners"), "the runners scroll in their frame"

    phone = phone_like(browser, page)
    phone.goto(f"{farm.url}/runners")
    card = phone.locator('#runners tr[data-runner-name="old-box"]')
    expect()(card).to_contain_text("too old: upgrade")
    assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the runners page scrolls sideways on a phone"
    shoot(phone, "runners-too-old-390")
    phone.context.close()
    page.context.close()


FULL_DISK = (
    "worker full-disk cannot work: [Errno 28] No space left on device: "
    "'/var/lib/farmhand/work/jobs/12/files/scene.blend'"
)
"""The reason a worker gives back a task with when its work dir's disk is full."""


def test_the_runners_page_says_which_runner_gave_its_task_back(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(api, name="night shot", frame_start=1, frame_end=2, chunk_size=1)
    broken = register(api, farm, "full-disk", **WORKSTATION)
    register(api, farm, "ready", **WORKSTATION)
    task = claim(api, broken)
    release(api, broken, task, FULL_DISK)
    note = (
        f"gave task 0 of job {job_id} back: cannot work: [Errno 28] No space left on device: "
        "'/var/lib/farmhand/work/jobs/12/files/scene.blend'"
    )

    page = sign_in(browser, farm)
    page.goto(f"{farm.url}/runners")
    row = page.locator('#runners tr[data-runner-name="full-disk"]')
    ready = page.locator('#runners tr[data-runner-name="ready"]')
    # A sentence with a path is no badge (it would lowercase the path and widen the
    # status column): it reads under "no task", as the manager wrote it.
    expect()(row.locator("td").nth(1).locator(".badge")).to_have_text(["idle"])
    expect()(row.locator("td.current")).to_have_text("no task" + note)
    expect()(row.locator("td.current .note")).to_have_text(note)
    expect()(ready.locator("td").nth(1).locator(".badge")).to_have_text(["idle"])
    shoot(page, "runners-gave-back-1280")
    assert page.evaluate(FITS_ITS_FRAME, "#runners"), "the runners scroll in their frame"

    phone = phone_like(browser, page)
    phone.goto(f"{farm.url}/runners")
    card = phone.locator('#runners tr[data-runner-name="full-disk"]')
    expect()(card).to_contain_text(note)
    assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the runners page scrolls sideways on a phone"
    shoot(phone, "runners-gave-back-390")

    # Handed a task again, it renders: the note goes with the next refresh.
    claim(api, broken)
    expect()(row.locator("td").nth(1).locator(".badge")).to_have_text(["busy"])
    expect()(row.locator("td.current")).to_contain_text("night shot")
    expect()(row.locator("td.current .note")).to_have_count(0)
    phone.context.close()
    page.context.close()
