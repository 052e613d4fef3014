"""The web's runners page says which runner this manager gives no task: one too old.

It showed such a runner plain `idle` (only `farmhand runners` said `too old: upgrade`);
it now shows the runner summary's `status_note`, which the CLI reads too.

No Blender here: scripted runners register with the capabilities they declare.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm, local_farm
from tests.browser.conftest import NO_SIDEWAYS_SCROLL, expect, phone_like, register, shoot, sign_in
from tests.browser.test_runner_controls import FITS_ITS_FRAME, WORKSTATION

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[LocalFarm]:
    # Scripted runners send no heartbeats: a long timeout keeps them online.
    with local_farm(tmp_path_factory.mktemp("runner-notes-farm"), heartbeat_timeout=600.0) as farm:
        farm.start_manager()
        yield farm


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
