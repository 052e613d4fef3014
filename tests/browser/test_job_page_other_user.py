"""A job page left open while another user signs in in the same browser.

Its next refresh gets 404 for the job (the new user may not see it); the page must not
claim the job was deleted while its header still names the old user.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import expect, manager_farm, sign_in
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


farm = manager_farm(name="other-user-farm")


def new_user(api: httpx.Client, name: str) -> str:
    answer = api.post("/api/admin/users", json={"name": name})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_a_job_page_after_another_user_signed_in_says_who_is_signed_in(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    ana, bob = new_user(api, "ana"), new_user(api, "bob")
    with httpx.Client(
        base_url=farm.url, headers={"Authorization": f"Bearer {ana}"}, timeout=30
    ) as as_ana:
        job_id = submit_stand_in(as_ana)
    page = sign_in(browser, farm, ana)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#job-status")).not_to_be_empty()

    # Bob signs in in the same browser: his session cookie takes the place of ana's in
    # one step (signed in elsewhere, then set here). Clearing ana's first left a moment
    # without a session, and a refresh falling into it rightly went to the login page.
    as_bob = sign_in(browser, farm, bob)
    page.context.add_cookies(as_bob.context.cookies())
    as_bob.context.close()

    # Ana's tab refreshes its job (its live stream ends, or a new task filter): the page
    # is drawn again for bob, who cannot see the job. It may be drawn again already.
    from playwright.sync_api import Error

    with contextlib.suppress(Error):
        page.evaluate("document.querySelector('#task-filter')?.dispatchEvent(new Event('change'))")
    expect()(page.locator("body")).to_have_attribute("data-user", "bob")
    expect()(page.locator("#main")).to_contain_text(f"There is no job {job_id} that you can see")
    expect()(page.locator("#main")).not_to_contain_text("deleted.")
    page.context.close()
