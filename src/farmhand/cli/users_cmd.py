"""`farmhand users …`: manage people's accounts on the manager's machine.

These commands open the manager's database directly (the same `--data-dir` /
`--database-url` as `farmhand manager`), not the HTTP API, so an admin who has lost
every password and token can still get back in:
`farmhand users set-password admin --email you@example.com` (a password signs in
together with an e-mail, and the first start's `admin` has none until given one).
Passwords are read from a hidden prompt or from stdin (`--password-stdin`), never
from the command line, where other users of the machine could see them in `ps`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from farmhand.cli.shown import shown, visible

if TYPE_CHECKING:  # imported when a command runs (users_db says why)
    from sqlalchemy.orm import Session

    from farmhand.manager.db.models import User

users = typer.Typer(no_args_is_help=True, help="Manage accounts (on the manager's machine).")
console = Console()
errors = Console(stderr=True)

DataDir = Annotated[
    Path, typer.Option(help="The manager's data directory.", envvar="FARMHAND_DATA_DIR")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="SQLAlchemy URL (default: SQLite in the data dir).", envvar="FARMHAND_DATABASE_URL"
    ),
]
Who = Annotated[
    str,
    typer.Argument(
        help="User id, name or e-mail; id:N, name:NAME or email:ADDRESS to be exact "
        "(an argument that names two accounts is refused)."
    ),
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def _session(data_dir: Path, database_url: str | None) -> Iterator[Session]:
    """`users_db.open_session`, a missing or unusable database said in one line."""
    from farmhand.cli import users_db

    try:
        with users_db.open_session(data_dir, database_url) as session:
            yield session
    except users_db.NoDatabase as error:
        raise _fail(str(error)) from None


def _find(session: Session, who: str) -> User:
    from farmhand.cli import users_db

    try:
        return users_db.find(session, who)
    except users_db.AccountError as error:  # nobody, or several: said, nothing changed
        raise _fail(error.message) from None


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users.command("list")
def list_users(data_dir: DataDir = Path("farmhand-data"), database_url: DatabaseUrl = None) -> None:
    """Everyone with an account, and how they can sign in."""
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        rows = users_db.listing(session, users_db.auth_settings(data_dir, database_url))
    table = Table("id", "name", "e-mail", "role", "state", "sign-in")
    for row in rows:
        table.add_row(*(shown(cell) for cell in row))
    console.print(table)


@users.command()
def create(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    email: Annotated[str | None, typer.Option(help="E-mail (their sign-in name).")] = None,
    role: Annotated[str, typer.Option(help="user or admin.")] = "user",
    password: Annotated[
        bool | None,
        typer.Option(
            "--password/--no-password",
            help="Ask for a password (default: with --email; it signs in with the e-mail).",
        ),
    ] = None,
    password_stdin: PasswordStdin = False,
    token: Annotated[bool, typer.Option(help="Also make an API token (printed once).")] = False,
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account."""
    if role not in ("user", "admin"):
        raise _fail("the role is user or admin")
    if password is None:  # a password without an e-mail is refused (accounts.set_password)
        password = email is not None
    secret = _read_password(password_stdin) if password or password_stdin else None
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        try:
            user, api_token = users_db.create(
                session, name=name, email=email, role=role, password=secret, with_token=token
            )
        except users_db.AccountError as error:
            raise _fail(error.message) from error
        console.print(f"Created {shown(user.name)} (id {user.id}, {shown(user.role)}).")
        if user.email is None and not api_token:  # nor an OAuth sign-in to link to them
            console.print(
                "They cannot sign in yet: give them an e-mail and a password with "
                f"farmhand users set-password {shown(user.name)} --email ADDRESS"
            )
    if api_token:
        console.print(f"API token (shown once): {api_token}")


def _set_disabled(who: str, disabled: bool, data_dir: Path, database_url: str | None) -> None:
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        try:
            users_db.set_disabled(session, user, disabled)
        except users_db.AccountError as error:
            raise _fail(error.message) from error
        console.print(f"{shown(user.name)} is {'disabled' if disabled else 'enabled'}.")


@users.command()
def disable(
    who: Who, data_dir: DataDir = Path("farmhand-data"), database_url: DatabaseUrl = None
) -> None:
    """Stop someone's sign-ins, API tokens and open sessions (reversible; never the farm's
    last active admin)."""
    _set_disabled(who, True, data_dir, database_url)


@users.command()
def enable(
    who: Who, data_dir: DataDir = Path("farmhand-data"), database_url: DatabaseUrl = None
) -> None:
    """Let a disabled user in again."""
    _set_disabled(who, False, data_dir, database_url)


@users.command()
def delete(
    who: Who,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Delete an account that owns no jobs (disable it otherwise); never the farm's last
    active admin."""
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        if not yes and not typer.confirm(f"Delete {visible(user.name)}?"):
            raise typer.Exit(1)
        try:
            users_db.delete(session, user)
        except users_db.AccountError as error:
            raise _fail(error.message) from error
        console.print(f"Deleted {shown(user.name)}.")


@users.command("set-password")
def set_password(
    who: Who,
    email: Annotated[
        str | None,
        typer.Option(help="Also give them this e-mail, which they sign in with (needed once)."),
    ] = None,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Set someone's password (ends their browser sessions, lifts a sign-in lock). They
    sign in with it and their e-mail: one who has none (like the first start's admin)
    needs --email."""
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        # Found (and an e-mail checked) before asking for the password: a refusal
        # then costs nobody a typed password.
        user = _find(session, who)
        refusal = users_db.no_email(user) if email is None else None
        if refusal is not None:
            raise _fail(refusal.message)
        try:
            if email is not None:
                users_db.set_email(session, user, email)
            users_db.set_password(session, user, _read_password(password_stdin))
        except users_db.AccountError as error:
            raise _fail(error.message) from error
        console.print(
            f"New password set for {shown(user.name)}: they sign in with {shown(user.email)}."
        )


@users.command()
def unlock(
    who: Who, data_dir: DataDir = Path("farmhand-data"), database_url: DatabaseUrl = None
) -> None:
    """Let someone locked out by failed sign-ins try again now (forgets their failures;
    the limit on the address the guesses came from stays)."""
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        users_db.unlock(session, user)
        console.print(
            f"{shown(user.name)} may sign in again: their failed sign-ins are forgotten "
            "(an address refused for too many failures stays refused until its wait ends)."
        )


@users.command("set-email")
def set_email(
    who: Who,
    email: Annotated[str, typer.Argument(help="The e-mail they sign in with.")],
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Give someone the e-mail they sign in with (with their password; an OAuth sign-in
    with this verified address then reaches their account too)."""
    from farmhand.cli import users_db

    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        try:
            users_db.set_email(session, user, email)
        except users_db.AccountError as error:
            raise _fail(error.message) from error
        console.print(f"{shown(user.name)} signs in with {shown(user.email)}.")
