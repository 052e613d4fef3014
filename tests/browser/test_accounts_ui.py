"""Signing in on the web UI with an e-mail and password, and with an OIDC provider.

A real manager process with a local test user (`LOCAL_TEST_EMAIL`/`PASSWORD`) and an
OpenID Connect provider configured, the test provider of `tests/oidc_provider.py` as
another process, and Debian's chromium clicking through both. Screenshots go to
`test-artifacts/screenshots/accounts-*.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import shoot
from tests.oidc_provider import IdentityProvider, start_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

EMAIL, PASSWORD = "ana@example.com", "ana's long password"


@dataclass
class AccountsFarm(LocalFarm):
    """A farm whose manager also gets the accounts and OIDC variables."""

    extra_env: dict[str, str] | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(self.extra_env or {})
        return env


@pytest.fixture(scope="module")
def accounts_farm(
    tmp_path_factory: pytest.TempPathFactory, browser: Any
) -> Iterator[tuple[AccountsFarm, IdentityProvider]]:
    root = tmp_path_factory.mktemp("accounts-farm")
    farm = AccountsFarm(root)
    provider = start_provider(root, farm.url)
    farm.extra_env = {
        "LOCAL_TEST_EMAIL": EMAIL,
        "LOCAL_TEST_PASSWORD": PASSWORD,
        "OIDC_ISSUER": provider.url,
        "OIDC_CLIENT_ID": "farmhand-oidc",
        "OIDC_CLIENT_SECRET": "s-oidc",
        "OIDC_NAME": "Studio SSO",
    }
    try:
        farm.start_manager()
        yield farm, provider
    except BaseException:
        print(farm.logs())
        raise
    finally:
        farm.stop()
        provider.stop()


def new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(30_000)
    return context.new_page()


def test_sign_in_with_email_and_password(
    browser: Any, accounts_farm: tuple[AccountsFarm, IdentityProvider]
) -> None:
    from playwright.sync_api import expect

    farm, _ = accounts_farm
    page = new_page(browser)
    page.goto(farm.url + "/")
    assert "/login" in page.url
    expect(page.locator("#oauth-oidc")).to_have_text("Sign in with Studio SSO")
    shoot(page, "accounts-01-login")

    page.fill("#email", EMAIL)
    page.fill("#password", "not the password")
    page.click("#password-login button[type=submit]")
    expect(page.locator(".notice.error")).to_contain_text("wrong e-mail or password")

    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#password-login button[type=submit]")
    page.wait_for_url(farm.url + "/")
    expect(page.locator("h1")).to_contain_text("Jobs")
    expect(page.locator("body")).to_contain_text("ana")
    shoot(page, "accounts-02-jobs-after-password-login")

    page.goto(farm.url + "/account")
    expect(page.locator("#password-form")).to_be_visible()
    page.fill("#old-password", PASSWORD)
    page.fill("#new-password", PASSWORD + "!")
    page.fill("#new-password-again", PASSWORD + "!")
    page.click("#password-form button[type=submit]")
    expect(page.locator(".toast")).to_contain_text("Password changed")
    shoot(page, "accounts-03-password-changed")
    # The page's new CSRF nonce works: creating a token still succeeds.
    page.fill("#token-name", "after the change")
    page.click("#new-token-form button[type=submit]")
    expect(page.locator("#token-secret")).to_contain_text("fh_api_")
    page.context.close()


def test_sign_in_with_the_oidc_provider(
    browser: Any, accounts_farm: tuple[AccountsFarm, IdentityProvider]
) -> None:
    from playwright.sync_api import expect

    farm, provider = accounts_farm
    page = new_page(browser)
    page.goto(farm.url + "/login")
    page.click("#oauth-oidc")
    page.wait_for_url(provider.url + "/authorize*")
    expect(page.locator("h1")).to_have_text("Test identity provider")
    page.fill("#username", "bob")
    page.fill("#password", "bob-pw")
    shoot(page, "accounts-04-provider-login")
    page.click("#sign-in")
    page.wait_for_url(farm.url + "/")
    expect(page.locator("h1")).to_contain_text("Jobs")
    expect(page.locator("body")).to_contain_text("bob")
    shoot(page, "accounts-05-jobs-after-oidc")
    page.context.close()


def test_admin_disables_a_user_in_the_ui(
    browser: Any, accounts_farm: tuple[AccountsFarm, IdentityProvider]
) -> None:
    from playwright.sync_api import expect

    farm, _ = accounts_farm
    page = new_page(browser)
    page.goto(farm.url + "/login")
    page.fill("#token", farm.admin_token)
    page.click("#token-login button[type=submit]")
    page.wait_for_url(farm.url + "/")
    page.goto(farm.url + "/account")
    row = page.locator("#users tbody tr", has_text=EMAIL)
    expect(row).to_contain_text("password")
    row.locator("[data-user-action=disable]").click()
    expect(row).to_contain_text("disabled")
    shoot(page, "accounts-06-admin-users")

    other = new_page(browser)
    other.goto(farm.url + "/login")
    other.fill("#email", EMAIL)
    other.fill("#password", PASSWORD + "!")
    other.click("#password-login button[type=submit]")
    expect(other.locator(".notice.error")).to_contain_text("disabled")
    other.context.close()

    row.locator("[data-user-action=enable]").click()
    expect(row).to_contain_text("active")
    page.context.close()
