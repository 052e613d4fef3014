"""An admin sees a locked-out user in the Users table, and lets them in again.

QA: a student locked out by wrong passwords was given a new one with **Set password**
("Password set"), yet signing in with it still said "try again in 883 s", and nothing on
the page showed the lock. Here Debian's chromium drives the account page of a real
manager: the locked user's row says `locked (15 min)` with an **Unlock** button, which
lets them sign in at once; **Set password** on a locked account does the same.
Screenshots go to `test-artifacts/screenshots/sign-in-lock-*.png`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import expect, manager_farm, shoot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

farm = manager_farm(name="sign-in-lock-farm")

PASSWORD = "a long enough password"
NEW_PASSWORD = "another long password"


def sign_in_answer(farm: LocalFarm, email: str, password: str) -> int:
    with httpx.Client(base_url=farm.url, timeout=30) as client:
        answer = client.post("/api/auth/login", json={"email": email, "password": password})
        return answer.status_code


def lock_out(farm: LocalFarm, email: str) -> None:
    """Five wrong passwords (the default per-account limit), then even the right one fails."""
    for _ in range(5):
        assert sign_in_answer(farm, email, "wrong guess") == 401
    assert sign_in_answer(farm, email, PASSWORD) == 429


def test_a_locked_user_is_shown_and_unlocked(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    for name in ("lena", "milo"):
        made = api.post(
            "/api/admin/users",
            json={"name": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        assert made.status_code == 201, made.text
        lock_out(farm, f"{name}@example.com")

    page = sign_in(browser, farm)
    page.goto(farm.url + "/account")
    lena = page.locator('#users tr[data-user-name="lena"]')
    expect()(lena.locator(".badge", has_text="locked")).to_have_text("locked (15 min)")
    shoot(page, "sign-in-lock-01-locked")

    lena.get_by_role("button", name="Unlock").click()
    expect()(lena.get_by_role("button", name="Unlock")).to_have_count(0)
    expect()(lena.locator(".badge", has_text="locked")).to_have_count(0)
    expect()(page.locator(".toast", has_text="lena may sign in again")).to_be_visible()
    shoot(page, "sign-in-lock-02-unlocked")
    assert sign_in_answer(farm, "lena@example.com", PASSWORD) == 200

    milo = page.locator('#users tr[data-user-name="milo"]')
    milo.get_by_role("button", name="Set password").click()
    page.fill("#set-password-value", NEW_PASSWORD)
    page.click("#set-password-submit")
    expect()(milo.locator(".badge", has_text="locked")).to_have_count(0)
    assert sign_in_answer(farm, "milo@example.com", NEW_PASSWORD) == 200
    page.context.close()
