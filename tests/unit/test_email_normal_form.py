"""One normal form of an e-mail address (`auth/emails.normal_email`) wherever addresses
are compared.

The sign-in rate limit's key (`ratelimit.account_key`) lower-cased on its own: right
only while every caller passed an address already normalised, and "Élise@…" typed with
a precomposed "É" and with "E" plus a combining accent would otherwise count against two
limits, doubling the guesses an attacker gets at one account.

`ALLOWED_EMAIL_DOMAINS` was only lower-cased (and not at all when built in code) while
the addresses it is compared with are NFC: an admin who wrote "Café.example" with "e"
plus a combining accent (as some keyboards and copies from some documents give it)
locked every verified address of that domain out of OAuth sign-up, with a 403.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmhand.manager.auth import accounts, ratelimit
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.settings import AuthSettings

NFC = "Élise@Example.com"
NFD = unicodedata.normalize("NFD", NFC)
VARIANTS = (NFC, NFD, NFD.lower(), NFC.upper(), f"  {NFC.lower()}\t")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'farmhand.sqlite3'}")
    upgrade(database.engine)
    yield database
    database.dispose()


def test_every_form_of_one_address_shares_one_sign_in_limit(database: Database) -> None:
    assert NFC != NFD
    now, window = utcnow(), 900.0
    with database.transaction() as session:
        for variant in VARIANTS:  # one failure under each form: five against one account
            limits = [ratelimit.Limit(ratelimit.account_key(variant), len(VARIANTS))]
            assert ratelimit.retry_after(session, limits, now, window) is None, variant
            ratelimit.record_failure(session, limits, now, window)
    with database.transaction() as session:
        for variant in VARIANTS:
            limits = [ratelimit.Limit(ratelimit.account_key(variant), len(VARIANTS))]
            wait = ratelimit.retry_after(session, limits, now, window)
            assert wait is not None, f"{variant!r} has a limit of its own"
    assert len({ratelimit.account_key(variant) for variant in VARIANTS}) == 1


CAFE_NFD = unicodedata.normalize("NFD", "Café.Example")


@pytest.mark.parametrize(
    "settings",
    [
        AuthSettings.from_env({"FARMHAND_ALLOWED_EMAIL_DOMAINS": f" {CAFE_NFD} ,other.example"}),
        AuthSettings(allowed_email_domains=(CAFE_NFD, "other.example")),
    ],
    ids=["from the environment", "built in code"],
)
def test_a_sign_up_domain_written_decomposed_or_in_capitals_admits_its_people(
    database: Database, settings: AuthSettings
) -> None:
    with database.transaction() as session:
        user = accounts.oauth_user(
            session,
            settings,
            utcnow(),
            provider="oidc",
            subject="42",
            email="zoe@café.example",
            email_verified=True,
            nickname="zoe",
        )
        assert user.email == "zoe@café.example"
        with pytest.raises(accounts.AccountError) as refused:
            accounts.oauth_user(
                session,
                settings,
                utcnow(),
                provider="oidc",
                subject="43",
                email="max@cafe.example",
                email_verified=True,
                nickname="max",
            )
        assert refused.value.status == 403, "another domain is still refused"
    assert settings.allowed_email_domains == ("café.example", "other.example")
