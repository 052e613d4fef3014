"""Migration 0023 rewrites stored e-mail addresses to their normal form.

Addresses stored before NFC was part of `auth/emails.normal_email` may hold "é" as "e"
plus a combining accent. `accounts.find_by_email` found them by reading every account
with an e-mail whenever an address outside ASCII matched nothing as typed; now they are
rewritten at upgrade and found by one lookup. Two accounts holding one address in
different forms are both left as they are, and a warning names them; once an admin gives
one another address, the other is stored in the normal form and signs in.

A database at revision 0022 with such rows, then a real manager started on it (which
migrates), on SQLite and on PostgreSQL. And what 0023 writes is pinned, whatever becomes
of the app's `normal_email`: a migration does what it did when it was written, so it
holds a frozen copy rather than calling the app's.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import text

from farmhand.manager.app import create_app
from farmhand.manager.auth import emails
from farmhand.manager.auth.passwords import hash_password
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from tests.integration.conftest import make_settings
from tests.integration.postgres import fresh_database
from tests.old_schema import insert_old

PASSWORD = "correct-horse-42"
ELISE_NFC = "\u00e9lise@b\u00fccher.example"  # "é" and "ü" each one code point
ELISE_NFD = unicodedata.normalize("NFD", ELISE_NFC)  # "e" + combining acute, ...
ZOE_NFC = "zo\u00eb@example.com"
ZOE_NFD = unicodedata.normalize("NFD", ZOE_NFC)
STORED = {  # name: address as an older version stored it
    "elise": ELISE_NFD,
    "max": "Max@Example.COM",
    "zoe": ZOE_NFC,
    "zoe2": ZOE_NFD,  # the same address as zoe's, to a person: a collision
    "ana": "ana@example.com",
}


def made_before_0023(database_url: str, addresses: dict[str, str] = STORED) -> dict[str, int]:
    """A database at revision 0022 holding `addresses`; the accounts' ids by name."""
    engine = make_engine(database_url)
    upgrade(engine, "0022")
    ids = {}
    with engine.begin() as connection:
        for name, email in addresses.items():
            ids[name] = insert_old(
                connection, "users", name=name, email=email, role="user",
                created_at=utcnow(), session_epoch=0, password_hash=hash_password(PASSWORD),
            )  # fmt: skip
    engine.dispose()
    return ids


def stored(database_url: str) -> dict[str, str]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, email FROM users WHERE email IS NOT NULL"))
        emails = {name: email for name, email in rows}
    engine.dispose()
    return emails


def check_upgrade(data_dir: Path, database_url: str) -> None:
    ids = made_before_0023(database_url)
    settings = make_settings(data_dir, database_url=database_url)
    with structlog.testing.capture_logs() as logs, TestClient(create_app(settings)) as client:
        assert stored(database_url) == {
            "elise": ELISE_NFC,
            "max": "max@example.com",
            "zoe": ZOE_NFC,
            "zoe2": ZOE_NFD,  # neither of the two is changed, and neither is lost
            "ana": "ana@example.com",
        }
        for typed, name in ((ELISE_NFC, "elise"), (ELISE_NFD.upper(), "elise"),
                            ("MAX@example.com", "max"), (ZOE_NFD, "zoe")):  # fmt: skip
            answer = client.post("/api/auth/login", json={"email": typed, "password": PASSWORD})
            assert answer.status_code == 200, (typed, answer.text)
            assert client.get("/api/auth/me").json()["user"]["name"] == name, typed
            out = client.post("/api/auth/logout", headers={"X-CSRF-Token": answer.json()["csrf"]})
            assert out.status_code < 300, out.text
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        taken = client.post("/api/admin/users", headers=admin,
                            json={"name": "other", "email": ELISE_NFC.upper()})  # fmt: skip
        assert taken.status_code == 409, taken.text
        # As the warning says: give all but one of them another address. The one left,
        # stored in its old form, then signs in with the address (it could not: sign-in
        # looks up the normal form only).
        moved = client.patch(f"/api/admin/users/{ids['zoe']}", headers=admin,
                             json={"email": "zoe.new@example.com"})  # fmt: skip
        assert moved.status_code == 200, moved.text
        assert stored(database_url)["zoe2"] == ZOE_NFC
        answer = client.post("/api/auth/login", json={"email": ZOE_NFD, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        assert client.get("/api/auth/me").json()["user"]["name"] == "zoe2"
    said = [entry for entry in logs if "different forms" in entry["event"]]
    assert len(said) == 1, logs
    assert said[0]["log_level"] == "warning"
    assert said[0]["account_ids"] == [ids["zoe"], ids["zoe2"]]
    assert said[0]["accounts"] == ["zoe", "zoe2"]


def test_stored_addresses_are_rewritten_to_their_normal_form_on_sqlite(tmp_path: Path) -> None:
    check_upgrade(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.fixture
def pg_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    yield fresh_database(postgres_url, f"emails_{tmp_path.name}")


@pytest.mark.xdist_group("postgres")
def test_stored_addresses_are_rewritten_to_their_normal_form_on_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    check_upgrade(tmp_path / "data", pg_url)


# Addresses as an older version stored them, and as 0023 leaves them (trimmed, lower
# case, then NFC: "İ" lower-cased is "i" and a combining dot, which has no one code point
# to compose into).
FROZEN = {
    "trim": ("  Trim@Example.ORG\t", "trim@example.org"),
    "elise": (ELISE_NFD, ELISE_NFC),
    "ilse": ("\u0130lse@Example.com", "i\u0307lse@example.com"),
    "angstrom": ("\u212bngstr\u00f6m@example.com", "\u00e5ngstr\u00f6m@example.com"),
    "ana": ("ana@example.com", "ana@example.com"),
}


def test_what_0023_writes_does_not_follow_the_apps_normaliser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should `auth/emails.normal_email` change (here: to leave addresses as typed, or
    to upper-case them), a database migrated afterwards still gets 0023's normal forms."""
    changes = [lambda email: email, lambda email: email.strip().upper()]
    for number, changed in enumerate(changes):
        database_url = f"sqlite:///{tmp_path / f'db{number}.sqlite3'}"
        made_before_0023(database_url, {name: old for name, (old, _) in FROZEN.items()})
        monkeypatch.setattr(emails, "normal_email", changed)
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        monkeypatch.undo()
        assert stored(database_url) == {name: new for name, (_, new) in FROZEN.items()}
