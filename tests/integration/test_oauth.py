"""Signing in through OAuth / OpenID Connect, against a real provider process.

`tests/oidc_provider.py` is a small OpenID Connect provider built on Authlib's server
(authorization code + PKCE, discovery, JWKS, RS256 id_tokens, userinfo). The tests run
it as a separate process on a free port and drive the whole browser flow by hand with
httpx: the manager's login route → the provider's login form → the provider's redirect
to the manager's callback → the session cookie → `/api/auth/me`. Google (OIDC by
discovery) and Discord (OAuth 2 + a userinfo endpoint) take their own code paths with
their endpoints pointed at the same provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from farmhand.manager.app import create_app
from farmhand.manager.auth import accounts, oauth, sessions
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import OAuthIdentity
from farmhand.manager.settings import AuthSettings
from tests.integration.conftest import make_settings
from tests.oidc_provider import USERS, IdentityProvider, start_provider

MANAGER = "http://testserver"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityProvider]:
    started = start_provider(tmp_path_factory.mktemp("provider"), MANAGER)
    try:
        yield started
    finally:
        started.stop()


class ManagerClient(TestClient):
    """A `TestClient` of a manager made by the `manager` fixture, which knows the
    manager's data directory."""

    data_dir: Path


ManagerFactory = Callable[..., ManagerClient]


@pytest.fixture
def manager(tmp_path: Path, provider: IdentityProvider) -> Iterator[ManagerFactory]:
    """Make an in-process manager whose auth settings point at the test provider."""
    clients: list[ManagerClient] = []

    def make(**auth: object) -> ManagerClient:
        settings = make_settings(
            tmp_path / f"data{len(clients)}", auth=provider.auth_settings(**auth)
        )
        client = ManagerClient(create_app(settings), base_url=MANAGER).__enter__()
        client.data_dir = settings.data_dir
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def provider_login(authorize_url: str, username: str, password: str) -> httpx.Response:
    """What a person does at the provider: open its page, fill in the form, send it."""
    page = httpx.get(authorize_url)
    assert page.status_code == 200, page.text
    assert 'name="password"' in page.text
    query = urlsplit(authorize_url).query
    form_url = authorize_url.split("?")[0]
    return httpx.post(form_url, data={"query": query, "username": username, "password": password})


def start(client: TestClient, key: str) -> str:
    answer: httpx.Response = client.get(
        f"/api/auth/{key}/login", params={"next": "/jobs/1"}, follow_redirects=False
    )
    assert answer.status_code == 302, answer.text
    assert oauth.STATE_COOKIE in client.cookies
    return answer.headers["location"]


def back_to_manager(client: TestClient, provider_answer: httpx.Response) -> httpx.Response:
    assert provider_answer.status_code == 302, provider_answer.text
    location = provider_answer.headers["location"]
    assert location.startswith(MANAGER + "/api/auth/")
    answer: httpx.Response = client.get(location.removeprefix(MANAGER), follow_redirects=False)
    return answer


def sign_in(client: TestClient, key: str, username: str = "alice") -> httpx.Response:
    authorize = start(client, key)
    password = next(u["password"] for u in USERS if u["username"] == username)
    return back_to_manager(client, provider_login(authorize, username, password))


@pytest.mark.parametrize("key", ["oidc", "google", "discord"])
def test_the_full_flow_signs_in_and_makes_a_user(manager: ManagerFactory, key: str) -> None:
    client = manager()
    assert client.get("/api/auth/me").status_code == 401

    authorize = start(client, key)
    params = parse_qs(urlsplit(authorize).query)
    assert params["code_challenge_method"] == ["S256"] and params["code_challenge"]
    assert params["state"] and params["client_id"] == [f"farmhand-{key}"]
    if key != "discord":
        assert params["nonce"], "OIDC requests carry a nonce"

    done = back_to_manager(client, provider_login(authorize, "alice", "alice-pw"))
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/jobs/1", "back to the page that was asked for"
    cookie = done.headers["set-cookie"]
    assert sessions.SESSION_COOKIE in cookie and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()

    me = client.get("/api/auth/me")
    assert me.status_code == 200, me.text
    user = me.json()["user"]
    assert user["email"] == "alice@example.com" and user["role"] == "user"
    assert user["name"] == "alice" and user["has_password"] is False
    assert me.json()["csrf"], "the session's CSRF nonce, for the next calls"

    # The same person again is the same user, not a new one.
    client.cookies.clear()
    assert sign_in(client, key).status_code == 303
    assert client.get("/api/auth/me").json()["user"]["id"] == user["id"]
    admin = {"Authorization": f"Bearer {client_admin_token(client)}"}
    listed = client.get("/api/admin/users", headers=admin).json()
    assert [u["providers"] for u in listed if u["id"] == user["id"]] == [[key]]


def client_admin_token(client: ManagerClient) -> str:
    return (client.data_dir / "admin-token").read_text().strip()


def test_two_providers_with_one_verified_email_are_one_user(manager: ManagerFactory) -> None:
    client = manager()
    assert sign_in(client, "oidc").status_code == 303
    first = client.get("/api/auth/me").json()["user"]["id"]
    client.cookies.clear()
    assert sign_in(client, "discord").status_code == 303
    assert client.get("/api/auth/me").json()["user"]["id"] == first


def test_a_state_that_does_not_match_is_refused(manager: ManagerFactory) -> None:
    client = manager()
    authorize = start(client, "oidc")
    answer = provider_login(authorize, "alice", "alice-pw")
    location = answer.headers["location"]
    forged = location.replace("state=", "state=x", 1)
    refused = client.get(forged.removeprefix(MANAGER), follow_redirects=False)
    assert refused.status_code == 400
    assert "state" in refused.json()["detail"]
    assert client.get("/api/auth/me").status_code == 401


def test_a_callback_without_the_sign_in_cookie_is_refused(manager: ManagerFactory) -> None:
    """Someone else's callback link (login CSRF) does not sign this browser in."""
    client = manager()
    authorize = start(client, "oidc")
    answer = provider_login(authorize, "alice", "alice-pw")
    client.cookies.clear()  # the link is opened in a browser that did not start the flow
    refused = client.get(answer.headers["location"].removeprefix(MANAGER), follow_redirects=False)
    assert refused.status_code == 400
    assert client.get("/api/auth/me").status_code == 401


def test_pkce_a_wrong_or_missing_verifier_is_refused(
    manager: ManagerFactory, provider: IdentityProvider
) -> None:
    client = manager()
    key = sessions.session_key(client.data_dir)
    authorize = start(client, "oidc")
    remembered = sessions.unseal(
        key, oauth.STATE_PURPOSE, client.cookies[oauth.STATE_COOKIE], utcnow()
    )
    assert remembered is not None
    code_url = provider_login(authorize, "alice", "alice-pw").headers["location"]
    code = parse_qs(urlsplit(code_url).query)["code"][0]

    # The provider itself: no verifier, or the wrong one, gets no token.
    token_url = provider.url + "/token"
    base = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{MANAGER}/api/auth/oidc/callback",
        "client_id": "farmhand-oidc",
        "client_secret": "s-oidc",
    }
    assert httpx.post(token_url, data=base).status_code == 400
    wrong = httpx.post(token_url, data={**base, "code_verifier": "w" * 50})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"

    # The manager: a sign-in cookie with the right state but another verifier fails.
    authorize = start(client, "oidc")
    remembered = sessions.unseal(
        key, oauth.STATE_PURPOSE, client.cookies[oauth.STATE_COOKIE], utcnow()
    )
    assert remembered is not None
    tampered = {**remembered, "v": "x" * 64}
    for cookie in client.cookies.jar:
        if cookie.name == oauth.STATE_COOKIE:
            cookie.value = sessions.seal(
                key, oauth.STATE_PURPOSE, tampered, utcnow(), timedelta(minutes=5)
            )
    refused = back_to_manager(client, provider_login(authorize, "alice", "alice-pw"))
    assert refused.status_code == 400
    assert "refused the code" in refused.json()["detail"]
    assert client.get("/api/auth/me").status_code == 401


def test_sign_up_can_be_limited_to_allowed_domains(manager: ManagerFactory) -> None:
    client = manager(allowed_email_domains=("studio.example",))
    refused = sign_in(client, "oidc", "alice")
    assert refused.status_code == 403
    assert "allowed domains" in refused.json()["detail"]
    assert client.get("/api/auth/me").status_code == 401

    # An unverified address in the right domain does not count either.
    assert sign_in(client, "oidc", "eve").status_code == 403

    assert sign_in(client, "oidc", "bob").status_code == 303
    assert client.get("/api/auth/me").json()["user"]["email"] == "bob@studio.example"


def test_a_disabled_user_cannot_sign_in_with_oauth(manager: ManagerFactory) -> None:
    client = manager()
    assert sign_in(client, "google").status_code == 303
    user_id = client.get("/api/auth/me").json()["user"]["id"]
    admin = {"Authorization": f"Bearer {client_admin_token(client)}"}
    assert (
        client.patch(
            f"/api/admin/users/{user_id}", json={"disabled": True}, headers=admin
        ).status_code
        == 200
    )
    assert client.get("/api/auth/me").status_code == 401, "the open session ended"
    client.cookies.clear()
    refused = sign_in(client, "google")
    assert refused.status_code == 403 and "disabled" in refused.json()["detail"]


def test_providers_are_listed_and_unconfigured_ones_are_404(
    manager: ManagerFactory, provider: IdentityProvider
) -> None:
    client = manager(discord_client_id=None)
    listed = client.get("/api/auth/providers").json()
    assert [p["key"] for p in listed] == ["google", "oidc"]
    assert {p["label"] for p in listed} == {"Google", "Test SSO"}
    assert client.get("/api/auth/discord/login", follow_redirects=False).status_code == 404
    assert client.get("/api/auth/nosuch/login", follow_redirects=False).status_code in (400, 404)
    login_page = client.get("/login")
    assert "Sign in with Test SSO" in login_page.text and "Discord" not in login_page.text


def test_settings_come_from_jiggablends_variables() -> None:
    auth = AuthSettings.from_env(
        {
            "GOOGLE_CLIENT_ID": "g", "GOOGLE_CLIENT_SECRET": "gs",
            "GOOGLE_REDIRECT_URL": "https://farm.example/api/auth/google/callback",
            "DISCORD_CLIENT_ID": "d", "OIDC_ISSUER": "https://sso.example/realms/x",
            "OIDC_CLIENT_ID": "o", "ENABLE_LOCAL_AUTH": "false",
            "FARMHAND_ALLOWED_EMAIL_DOMAINS": "Studio.example, other.example",
        }
    )  # fmt: skip
    assert auth.google_client_id == "g" and auth.google_client_secret == "gs"
    assert auth.google_redirect_url == "https://farm.example/api/auth/google/callback"
    assert auth.enable_local_auth is False
    assert auth.allowed_email_domains == ("studio.example", "other.example")
    assert sorted(oauth.providers(auth)) == ["discord", "google", "oidc"]
    assert replace(auth, oidc_issuer=None).oidc_client_id == "o"
    assert sorted(oauth.providers(replace(auth, oidc_issuer=None))) == ["discord", "google"]


def test_a_browser_is_sent_back_to_the_login_page_with_a_fixed_message(
    manager: ManagerFactory,
) -> None:
    client = manager(allowed_email_domains=("studio.example",))
    html = {"Accept": "text/html,application/xhtml+xml"}
    authorize = start(client, "oidc")
    location = provider_login(authorize, "alice", "alice-pw").headers["location"]
    answer = client.get(location.removeprefix(MANAGER), headers=html, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?error=domain"
    page = client.get("/login?error=domain")
    assert "allowed domains" in page.text
    assert client.get("/api/auth/me").status_code == 401

    forged = client.get(
        location.removeprefix(MANAGER).replace("state=", "state=x", 1),
        headers=html,
        follow_redirects=False,
    )
    assert forged.headers["location"] == "/login?error=oauth-failed"
    assert "did not complete" in client.get("/login?error=oauth-failed").text
    assert "<script>" not in client.get("/login?error=<script>").text


def admin_listing(client: ManagerClient) -> dict[str, dict[str, Any]]:
    """`GET /api/admin/users`, by user name."""
    admin = {"Authorization": f"Bearer {client_admin_token(client)}"}
    answer = client.get("/api/admin/users", headers=admin)
    assert answer.status_code == 200, answer.text
    return {u["name"]: u for u in answer.json()}


@pytest.mark.parametrize(("first", "second"), [("google", "discord"), ("discord", "oidc")])
def test_an_unverified_email_is_never_an_accounts_email_nor_links(
    manager: ManagerFactory, first: str, second: str
) -> None:
    """eve types eve@studio.example at a provider that does not check it (OIDC's
    `email_verified`, Discord's `verified`: false). Were it stored on her account, the
    address's real owner signing in with it verified would be linked to eve's account,
    and eve would see their jobs and files."""
    client = manager()
    assert sign_in(client, first, "eve").status_code == 303
    eve = client.get("/api/auth/me").json()["user"]
    assert eve["name"] == "eve" and eve["email"] is None

    client.cookies.clear()
    assert sign_in(client, second, "realeve").status_code == 303
    owner = client.get("/api/auth/me").json()["user"]
    assert owner["id"] != eve["id"], "the address's owner is not signed in as eve"
    assert owner["email"] == "eve@studio.example"

    # eve again is still eve, without the address.
    client.cookies.clear()
    assert sign_in(client, first, "eve").status_code == 303
    again = client.get("/api/auth/me").json()["user"]
    assert again["id"] == eve["id"] and again["email"] is None

    listed = admin_listing(client)
    assert (listed["eve"]["email"], listed["eve"]["providers"]) == (None, [first])
    assert listed["realeve"]["email"] == "eve@studio.example"
    assert listed["realeve"]["providers"] == [second]


def test_an_address_verified_later_fills_an_account_without_one(
    manager: ManagerFactory,
) -> None:
    client = manager()
    context = client.app.state.farm  # type: ignore[attr-defined]
    settings = context.settings.auth

    def signs_in(subject: str, email: str, verified: bool) -> tuple[int, str | None]:
        with context.db.transaction() as session:
            user = accounts.oauth_user(
                session, settings, utcnow(), provider="discord", subject=subject,
                email=email, email_verified=verified, nickname=None,
            )  # fmt: skip
            return user.id, user.email

    first, email = signs_in("d-1", "Dana@Example.com", verified=False)
    assert email is None
    assert signs_in("d-1", "dana@example.com", verified=False) == (first, None)
    assert signs_in("d-1", "Dana@Example.com", verified=True) == (first, "dana@example.com")

    # A verified address another account already has is not taken over, nor linked
    # to by a known identity; an unverified one never replaces an address.
    other, _ = signs_in("d-2", "sam@example.com", verified=False)
    assert signs_in("d-2", "dana@example.com", verified=True) == (other, None)
    assert signs_in("d-1", "new@example.com", verified=False) == (first, "dana@example.com")
    with context.db.transaction() as session:
        stored = dict(session.execute(select(OAuthIdentity.subject, OAuthIdentity.email)).all())
    assert stored == {"d-1": None, "d-2": "dana@example.com"}, "only verified addresses kept"


def test_a_verified_address_with_a_newline_or_nul_is_not_an_accounts_email(
    manager: ManagerFactory,
) -> None:
    """A provider that verifies nothing of the shape may still send `c\\n<script>@…`:
    the admin API refuses such an address, and so does sign-in (the account has none)."""
    client = manager()
    context = client.app.state.farm  # type: ignore[attr-defined]
    for n, odd in enumerate(["c\n<script>@studio.example", "n\x00@studio.example", "a b@x.y"]):
        with context.db.transaction() as session:
            user = accounts.oauth_user(
                session, context.settings.auth, utcnow(), provider="oidc", subject=f"s-{n}",
                email=odd, email_verified=True, nickname=f"odd{n}",
            )  # fmt: skip
            assert user.email is None, odd
    admin = {"Authorization": f"Bearer {client_admin_token(client)}"}
    refused = client.post(
        "/api/admin/users", headers=admin, json={"name": "nl", "email": "n\x00@studio.example"}
    )
    assert refused.status_code in (400, 422), refused.text


def test_every_answer_with_a_user_lists_their_providers(manager: ManagerFactory) -> None:
    client = manager()
    assert sign_in(client, "oidc").status_code == 303
    assert sign_in(client, "discord").status_code == 303
    me = client.get("/api/auth/me").json()["user"]
    assert me["providers"] == ["oidc", "discord"]

    admin = {"Authorization": f"Bearer {client_admin_token(client)}"}
    patched = client.patch(f"/api/admin/users/{me['id']}", json={"role": "user"}, headers=admin)
    assert patched.status_code == 200 and patched.json()["providers"] == ["oidc", "discord"]
    password = "alice's new password"
    set_ = client.put(
        f"/api/admin/users/{me['id']}/password", json={"password": password}, headers=admin
    )
    assert set_.status_code == 204
    client.cookies.clear()
    login = client.post("/api/auth/login", json={"email": me["email"], "password": password})
    assert login.status_code == 200 and login.json()["user"]["providers"] == ["oidc", "discord"]
    changed = client.post(
        "/api/auth/password",
        json={"old_password": password, "new_password": password + "!"},
        headers={"X-CSRF-Token": login.json()["csrf"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["user"]["providers"] == ["oidc", "discord"]
    created = client.post(
        "/api/admin/users", json={"name": "zed", "email": "zed@example.com"}, headers=admin
    )
    assert created.status_code == 201 and created.json()["user"]["providers"] == []
