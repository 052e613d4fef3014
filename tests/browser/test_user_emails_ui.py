"""An admin gives people an e-mail, then a password, in the account page's Users table.

A password signs in only together with an e-mail, and the API refuses one to an account
without (1e1fa56). The Users table offered only "Set password", so an admin trying it on
a token-only user (or on the first start's `admin`) got the 409 in a toast pointing to
the command line, and the table listed a password left on an account without an e-mail
as "password", though nobody can sign in with it. These tests drive Debian's chromium
against a real manager process and its SQLite database: an admin gives a token-only
user an e-mail and a password with the keyboard, and that user signs in with them
through the login form; a taken or malformed address is refused at the field with the
API's words; the Sign-in column says what `farmhand users list` says. Screenshots go to
`test-artifacts/screenshots/user-emails-*.png`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.cli import users_db
from farmhand.localfarm import LocalFarm
from farmhand.manager.db.models import User
from tests.browser.conftest import expect, manager_farm, shoot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

farm = manager_farm(name="user-emails-farm")

PASSWORD = "a long enough password"


def create_user(api: httpx.Client, name: str, **fields: str) -> int:
    answer = api.post("/api/admin/users", json={"name": name, **fields})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["user"]["id"])


def email_of(api: httpx.Client, user_id: int) -> str | None:
    users = api.get("/api/admin/users").json()
    return next(u["email"] for u in users if u["id"] == user_id)  # type: ignore[no-any-return]


def users_page(browser: Any, farm: LocalFarm) -> Any:
    """The admin's account page, once its Users table has loaded."""
    page = sign_in(browser, farm)
    page.goto(farm.url + "/account")
    expect()(page.locator("#users tbody tr[data-user-id]").first).to_be_visible()
    return page


def row_of(page: Any, name: str) -> Any:
    return page.locator(f'#users tr[data-user-name="{name}"]')


def test_an_admin_gives_a_token_only_user_an_email_and_a_password(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    create_user(api, "tess")
    page = users_page(browser, farm)
    row = row_of(page, "tess")
    expect()(row.locator('td[data-label="Sign-in"]')).to_have_text("token only")

    # "Set password" on an account without an e-mail says why it needs one first, and
    # offers the e-mail field, focused, in the same place; all with the keyboard.
    row.get_by_role("button", name="Set password").focus()
    page.keyboard.press("Enter")
    editor = page.locator("#sign-in-editor")
    expect()(editor).to_be_visible()
    expect()(editor.locator("h3")).to_have_text("How tess signs in")
    expect()(page.locator("#set-password-note")).to_contain_text("tess has no e-mail yet")
    expect()(page.locator("#set-password-value")).to_be_disabled()
    expect()(page.locator("#set-email-value")).to_be_focused()
    shoot(page, "user-emails-01-password-needs-an-email")

    page.keyboard.type("Tess@Studio.example")
    page.keyboard.press("Enter")
    expect()(row.locator('td[data-label="E-mail"]')).to_have_text("tess@studio.example")
    expect()(page.locator("#set-password-value")).to_be_focused()
    expect()(page.locator("#set-password-note")).to_be_hidden()
    expect()(row.get_by_role("button", name="Change e-mail")).to_be_visible()
    shoot(page, "user-emails-02-email-saved")

    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect()(editor).to_be_hidden()
    expect()(page.locator(".toast.ok").last).to_contain_text(
        "Password set for tess, who signs in with tess@studio.example"
    )
    expect()(row.locator('td[data-label="Sign-in"]')).to_have_text("password")
    expect()(row.get_by_role("button", name="Set password")).to_be_focused()
    shoot(page, "user-emails-03-password-set")
    page.context.close()

    # Tess signs in through the login form with what the admin gave her.
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(30_000)
    tess = context.new_page()
    tess.goto(farm.url + "/login")
    tess.fill("#email", "TESS@studio.example")
    tess.fill("#password", PASSWORD)
    tess.click("#password-login button[type=submit]")
    tess.wait_for_url(farm.url + "/")
    tess.goto(farm.url + "/account")
    expect()(tess.locator("main")).to_contain_text("Signed in as tess (user)")
    shoot(tess, "user-emails-04-tess-signed-in")
    context.close()


def test_a_refused_email_is_explained_at_the_field(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    create_user(api, "ana", email="ana@example.com")
    bo = create_user(api, "bo")
    page = users_page(browser, farm)
    row = row_of(page, "bo")
    row.get_by_role("button", name="Set e-mail").click()
    field, problem = page.locator("#set-email-value"), page.locator("#set-email-error")

    field.fill("ANA@example.com")
    page.locator("#set-email-submit").click()
    expect()(problem).to_have_text("Not saved: a user with that e-mail already exists.")
    expect()(field).to_have_attribute("aria-invalid", "true")
    expect()(field).to_be_focused()
    shoot(page, "user-emails-05-email-taken")

    field.fill("two@@x")
    field.press("Enter")
    expect()(problem).to_have_text(
        "Not saved: 'two@@x' is not an e-mail address (one @, no spaces)."
    )
    shoot(page, "user-emails-06-email-malformed")
    # Said at the field, not in a toast that goes away; and nothing was changed (a dash).
    expect()(page.locator(".toast.error")).to_have_count(0)
    expect()(row.locator('td[data-label="E-mail"]')).to_have_text("\u2013")
    assert email_of(api, bo) is None

    # A good one clears the message; Escape closes the editor, back on the row's button.
    field.fill("bo@example.com")
    field.press("Enter")
    expect()(problem).to_be_hidden()
    expect()(field).not_to_have_attribute("aria-invalid", "true")
    expect()(row.locator('td[data-label="E-mail"]')).to_have_text("bo@example.com")
    page.keyboard.press("Escape")
    expect()(page.locator("#sign-in-editor")).to_be_hidden()
    expect()(row.get_by_role("button", name="Change e-mail")).to_be_focused()
    page.context.close()


def test_a_leftover_password_without_an_email_reads_as_unusable(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    # A password set before one needed an e-mail: only the database can still make one.
    create_user(api, "olga", email="olga@example.com", password=PASSWORD)
    with users_db.open_session(farm.data_dir, None) as session:
        user = session.query(User).filter_by(name="olga").one()
        user.email = None
    with users_db.open_session(farm.data_dir, None) as session:
        cli_ways = next(row for row in users_db.listing(session) if row[1] == "olga")[5]
    assert cli_ways == "password (no e-mail: unusable)"

    page = users_page(browser, farm)
    row = row_of(page, "olga")
    expect()(row.locator('td[data-label="Sign-in"]')).to_have_text(cli_ways)
    shoot(page, "user-emails-07-leftover-password")
    page.context.close()
