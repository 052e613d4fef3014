"""`farmhand users …`: manage people's accounts on the manager's machine.

These commands open the manager's database directly (the same `--data-dir` /
`--database-url` as `farmhand manager`), not the HTTP API, so an admin who has lost
every password and token can still get back in: `farmhand users set-password admin`.
Passwords are read from a hidden prompt or from stdin (`--password-stdin`), never
from the command line, where other users of the machine could see them in `ps`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from farmhand.manager.auth import accounts
from farmhand.manager.auth.accounts import AccountError
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import ApiToken, OAuthIdentity, User
from farmhand.manager.settings import ManagerSettings

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
Who = Annotated[str, typer.Argument(help="User id, name or e-mail.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


@contextmanager
def _session(data_dir: Path, database_url: str | None) -> Iterator[Session]:
    from farmhand.manager.db.migrate import upgrade  # Alembic: only when a command runs

    settings = ManagerSettings.from_env(data_dir=data_dir, database_url=database_url)
    db = Database(settings.resolved_database_url)
    try:
        upgrade(db.engine)
        with db.transaction() as session:
            yield session
    finally:
        db.dispose()


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/] {message}")
    return typer.Exit(1)


def _find(session: Session, who: str) -> User:
    clauses = [User.name == who, func.lower(User.email) == who.strip().lower()]
    if who.isdigit():
        clauses.append(User.id == int(who))
    user = session.scalar(select(User).where(or_(*clauses)))
    if user is None:
        raise _fail(f"no user {who!r}")
    return user


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users.command("list")
def list_users(data_dir: DataDir = Path("farmhand-data"), database_url: DatabaseUrl = None) -> None:
    """Everyone with an account, and how they can sign in."""
    with _session(data_dir, database_url) as session:
        table = Table("id", "name", "e-mail", "role", "state", "sign-in")
        linked: dict[int, list[str]] = {}
        for user_id, provider in session.execute(
            select(OAuthIdentity.user_id, OAuthIdentity.provider)
        ):
            linked.setdefault(user_id, []).append(provider)
        for user in session.scalars(select(User).order_by(User.id)):
            ways = (["password"] if user.password_hash else []) + linked.get(user.id, [])
            table.add_row(
                str(user.id), user.name, user.email or "-", user.role,
                "disabled" if user.disabled_at else "active", ", ".join(ways) or "token only",
            )  # fmt: skip
    console.print(table)


@users.command()
def create(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    email: Annotated[str | None, typer.Option(help="E-mail (their sign-in name).")] = None,
    role: Annotated[str, typer.Option(help="user or admin.")] = "user",
    password: Annotated[
        bool, typer.Option("--password/--no-password", help="Ask for a password.")
    ] = True,
    password_stdin: PasswordStdin = False,
    token: Annotated[bool, typer.Option(help="Also make an API token (printed once).")] = False,
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account."""
    if role not in ("user", "admin"):
        raise _fail("the role is user or admin")
    secret = _read_password(password_stdin) if password or password_stdin else None
    with _session(data_dir, database_url) as session:
        try:
            user = accounts.create_user(
                session, utcnow(), name=name, email=email, role=role, password=secret
            )
        except AccountError as error:
            raise _fail(error.message) from error
        api_token = None
        if token:
            api_token = new_token("api")
            session.add(
                ApiToken(user_id=user.id, name="first token", token_hash=token_hash(api_token),
                         created_at=utcnow())
            )  # fmt: skip
        console.print(f"Created {user.name} (id {user.id}, {user.role}).")
    if api_token:
        console.print(f"API token (shown once): {api_token}")


def _set_disabled(who: str, disabled: bool, data_dir: Path, database_url: str | None) -> None:
    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        accounts.set_disabled(user, disabled, utcnow())
        console.print(f"{user.name} is {'disabled' if disabled else 'enabled'}.")


@users.command()
def disable(
    who: Who, data_dir: DataDir = Path("farmhand-data"), database_url: DatabaseUrl = None
) -> None:
    """Stop someone's sign-ins, API tokens and open sessions (reversible)."""
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
    """Delete an account that owns no jobs (disable it otherwise)."""
    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        if not yes and not typer.confirm(f"Delete {user.name}?"):
            raise typer.Exit(1)
        try:
            accounts.delete_user(session, user)
        except AccountError as error:
            raise _fail(error.message) from error
        console.print(f"Deleted {user.name}.")


@users.command("set-password")
def set_password(
    who: Who,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Set someone's password (ends their browser sessions)."""
    secret = _read_password(password_stdin)
    with _session(data_dir, database_url) as session:
        user = _find(session, who)
        try:
            accounts.set_password(user, secret)
        except AccountError as error:
            raise _fail(error.message) from error
        console.print(f"New password set for {user.name}.")
