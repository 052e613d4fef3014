"""Which account a `farmhand users` command, and an e-mail, names (QA round 8).

`farmhand users` matched its argument against id, name and e-mail at once and took
the first row: with a user named `dave@example.com` and alice holding that address,
`farmhand users disable dave@example.com` disabled alice; with a user named `4`,
`set-password 4` set the password of carol (id 4) and ended her sessions. An
argument that names two accounts is now refused, listing them, and `id:N`,
`name:NAME` and `email:ADDRESS` say exactly which one.

Two accounts could also hold what a person sees as one address: "élise@…" with "é"
as one code point (NFC) and as "e" plus a combining accent (NFD). Addresses are now
normalised to NFC (`emails.normal_email`) for storing, uniqueness and sign-in; those
stored before that are rewritten at upgrade (`test_email_migration.py`).

A real manager app, its real SQLite database, and the real CLI on it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings
from tests.integration.test_admin_password_sign_in import (
    PASSWORD,
    first_start_fixture,
    sign_in,
    users,
)

NFC = "\u00c9LISE@b\u00fccher.example"  # "É" as one code point
NFD = "E\u0301LISE@bu\u0308cher.example"  # "E" + combining acute, "u" + combining diaeresis


data_dir = first_start_fixture()  # `admin` is id 1


def rows(data_dir: Path) -> dict[str, str]:
    """`farmhand users list`, each row by its user name."""
    listing = users(data_dir, "list")
    assert listing.exit_code == 0, listing.output
    table = {}
    for line in listing.output.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 2 and cells[1].isdigit():
            table[cells[2]] = line
    return table


def made(data_dir: Path, *args: str, input: str | None = None) -> None:
    result = users(data_dir, "create", *args, input=input)
    assert result.exit_code == 0, result.output


def test_an_argument_that_names_two_accounts_changes_nobody(data_dir: Path) -> None:
    made(data_dir, "alice", "--email", "alice@example.com", "--password-stdin",
         input=PASSWORD + "\n")  # fmt: skip
    made(data_dir, "dave@example.com", "--email", "dave.real@example.com", "--no-password")
    made(data_dir, "carol", "--email", "carol@example.com", "--password-stdin",
         input=PASSWORD + "\n")  # fmt: skip
    made(data_dir, "4", "--email", "four@example.com", "--no-password")
    table = rows(data_dir)
    assert table["carol"].split("│")[1].strip() == "4", table  # carol has id 4
    assert users(data_dir, "set-email", "alice", "Dave@Example.com").exit_code == 0
    before = rows(data_dir)

    # The QA's two cases, and every other command that acts on one account.
    for args, input in [
        (("disable", "dave@example.com"), None),
        (("set-password", "4", "--password-stdin"), "new-password-77\n"),
        (("enable", "4"), None),
        (("delete", "--yes", "dave@example.com"), None),
        (("set-email", "4", "someone@example.com"), None),
    ]:
        refused = users(data_dir, *args, input=input)
        assert refused.exit_code == 1, (args, refused.output)
        text = " ".join(refused.output.split())
        assert "names 2 accounts, so nothing was changed" in text, text
        assert "is disabled" not in text and "New password set" not in text
    text = " ".join(users(data_dir, "disable", "dave@example.com").output.split())
    assert "alice by its e-mail (email:dave@example.com)" in text, text
    assert "dave@example.com by its name (name:dave@example.com)" in text, text
    text = " ".join(users(data_dir, "set-password", "4", "--password-stdin").output.split())
    assert "carol by its id (id:4)" in text and "4 by its name (name:4)" in text, text
    assert rows(data_dir) == before, "nobody was disabled, deleted or given an e-mail"
    with TestClient(create_app(make_settings(data_dir))) as client:
        assert sign_in(client, "carol@example.com") == 200, "carol's password is hers still"

    # The exact forms reach the one meant, and only them.
    done = users(data_dir, "disable", "name:dave@example.com")
    assert done.exit_code == 0 and "dave@example.com is disabled." in done.output, done.output
    done = users(data_dir, "set-password", "name:4", "--password-stdin", input=PASSWORD + "\n")
    assert done.exit_code == 0 and "New password set for 4:" in done.output, done.output
    done = users(data_dir, "set-password", "id:4", "--password-stdin", input="carols-new-77\n")
    assert done.exit_code == 0 and "New password set for carol:" in done.output, done.output
    done = users(data_dir, "set-email", "email:DAVE@example.com", "alice@example.com")
    assert done.exit_code == 0 and "alice signs in with alice@example.com" in done.output
    table = rows(data_dir)
    assert "disabled" in table["dave@example.com"] and "active" in table["alice"], table
    with TestClient(create_app(make_settings(data_dir))) as client:
        assert sign_in(client, "four@example.com") == 200
        assert sign_in(client, "carol@example.com", "carols-new-77") == 200
        assert sign_in(client, "alice@example.com") == 200

    # No longer ambiguous, a bare argument works as before; an unknown one is said.
    assert users(data_dir, "enable", "dave@example.com").exit_code == 0
    missing = users(data_dir, "disable", "id:99")
    assert missing.exit_code == 1 and "no user with id '99'" in " ".join(missing.output.split()), (
        missing.output
    )


def test_one_address_in_two_unicode_forms_is_one_address(farm: Farm) -> None:
    def create(name: str) -> int:
        answer = farm.client.post("/api/admin/users", json={"name": name}, headers=farm.admin)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["user"]["id"])

    elise, other = create("elise"), create("other")
    given = farm.client.patch(f"/api/admin/users/{elise}", json={"email": NFC},
                              headers=farm.admin)  # fmt: skip
    assert given.status_code == 200, given.text
    assert given.json()["email"] == "\u00e9lise@b\u00fccher.example"
    clash = farm.client.patch(f"/api/admin/users/{other}", json={"email": NFD},
                              headers=farm.admin)  # fmt: skip
    assert clash.status_code == 409 and "already exists" in clash.text, clash.text
    made = farm.client.post("/api/admin/users", json={"name": "third", "email": NFD.lower()},
                            headers=farm.admin)  # fmt: skip
    assert made.status_code == 409, made.text

    password = farm.client.put(f"/api/admin/users/{elise}/password",
                               json={"password": PASSWORD}, headers=farm.admin)  # fmt: skip
    assert password.status_code == 204, password.text
    for typed in (NFC, NFD, NFD.lower()):
        assert sign_in(farm.client, typed) == 200, typed
        assert farm.client.get("/api/auth/me").json()["user"]["name"] == "elise"


def test_the_cli_makes_no_account_the_api_would_refuse_to_name(data_dir: Path) -> None:
    """`farmhand users create` took any name, so an account named `id:4` (reachable only as
    `name:id:4`) or with spaces could exist; the API refuses such names. Both refuse now."""
    for name in ("id:4", "two words", "_under"):
        result = users(data_dir, "create", name, "--no-password")
        assert result.exit_code != 0, result.output
        assert "is not a user name" in result.output, result.output
    assert set(rows(data_dir)) == {"admin"}, "nothing was made"
    made(data_dir, "ok.name-1@x", "--no-password")
    assert "ok.name-1@x" in rows(data_dir)
