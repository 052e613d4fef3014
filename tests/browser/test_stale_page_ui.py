"""What a form posted from a stale page says: what happened and how to recover.

Sign out from a tab loaded before its user signed in again elsewhere (another tab, a new
password) posts another session's CSRF nonce. The manager refused it with a bare JSON
`{"detail": "sign-out needs the page's CSRF token"}` in place of a page: no way on, and no
word that the user was still signed in. It now answers a page (403) saying so, with a Sign
out button that works and a link back to the jobs.

A sign-in form whose nonce cookie is gone (expired after an hour, or cookies cleared)
answers the form again, saying it expired, and the form it answers signs in.
"""

from __future__ import annotations

from typing import Any

import pytest

from farmhand.localfarm import LocalFarm
from farmhand.manager.web.routes import LOGIN_FORM_STALE, SIGN_OUT_STALE
from tests.browser.conftest import expect, manager_farm, shoot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

farm = manager_farm(name="stale-page-farm")


def sign_in_on(page: Any, farm: LocalFarm) -> None:
    """Sign in with the admin's token on the login page `page` shows."""
    page.fill("#token", farm.admin_token)
    page.click("#token-login button[type=submit]")


def test_sign_out_from_a_stale_page_says_what_happened_and_how_to_sign_out(
    browser: Any, farm: LocalFarm
) -> None:
    stale = sign_in(browser, farm)  # the jobs page, loaded in this session
    # A page that has not noticed the session end (a laptop asleep meanwhile, say): a
    # live page that hears of it goes to the sign-in by itself (49a7d7e).
    expect()(stale.locator("#jobs")).to_be_visible()
    stale.route("**/api/**", lambda route: route.abort())
    other = stale.context.new_page()
    other.goto(farm.url + "/")
    other.click("text=Sign out")
    other.wait_for_url(farm.url + "/login")
    sign_in_on(other, farm)  # a new session: the first tab's page is now stale
    other.wait_for_url(farm.url + "/")

    with stale.expect_response(farm.url + "/logout") as answer:
        stale.click("text=Sign out")
    assert answer.value.status == 403
    expect()(stale.locator("h1")).to_have_text("You are still signed in")
    expect()(stale.locator("main")).to_contain_text(SIGN_OUT_STALE)
    back = stale.locator("main a", has_text="Back to the jobs")
    expect()(back).to_have_attribute("href", "/")
    shoot(stale, "stale-page-sign-out")

    # The answer's own Sign out works: both tabs are signed out.
    stale.click("header >> text=Sign out")
    stale.wait_for_url(farm.url + "/login")
    other.goto(farm.url + "/")
    assert "/login" in other.url, "the other tab is signed out too"
    stale.context.close()


def test_a_sign_in_form_whose_cookie_is_gone_says_so_and_signs_in_the_second_time(
    browser: Any, farm: LocalFarm
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(farm.url + "/login")
    context.clear_cookies()  # the login nonce's cookie expired meanwhile
    with page.expect_response(farm.url + "/login") as answer:
        sign_in_on(page, farm)
    assert answer.value.status == 403
    expect()(page.locator(".notice.error")).to_have_text(LOGIN_FORM_STALE)
    expect()(page.locator("#token")).to_be_visible()
    shoot(page, "stale-page-sign-in")

    sign_in_on(page, farm)
    page.wait_for_url(farm.url + "/")
    expect()(page.locator("h1")).to_contain_text("Jobs")
    context.close()
