"""One normal form of an e-mail address (`auth/emails.normal_email`) wherever addresses
are compared.

The sign-in rate limit's key (`ratelimit.account_key`) lower-cased on its own: right
only while every caller passed an address already normalised, and "Élise@…" typed with
a precomposed "É" and with "E" plus a combining accent would otherwise count against two
limits, doubling the guesses an attacker gets at one account.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmhand.manager.auth import ratelimit
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.migrate import upgrade

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
