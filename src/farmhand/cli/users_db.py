"""The database side of `farmhand users`: opening the manager's database, finding and
changing accounts.

Kept apart from `users_cmd` so that SQLAlchemy and the manager's models are imported
only when a `farmhand users` command runs, not by every `farmhand` command (the Blender
add-on runs `farmhand job` every few seconds, and each start pays for what it imports).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import make_url, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from farmhand.manager.auth import accounts, ratelimit
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import ApiToken, User
from farmhand.manager.db.presence import (
    StartRefused,
    cannot_use_database,
    check_database_url,
    damaged,
    told_where,
    unusable_database,
)
from farmhand.manager.settings import AuthSettings, ManagerSettings, SettingsError

AccountError = accounts.AccountError


class NoDatabase(Exception):
    """The manager's database is not where the command was told to look, or cannot be
    opened (nor its settings read); the message says which and why."""


@contextmanager
def open_session(data_dir: Path, database_url: str | None) -> Iterator[Session]:
    """One transaction on the manager's database, brought up to date first.

    A SQLite database must already exist: these commands change a manager's accounts,
    and a wrong `--data-dir` (or the default, run from the wrong folder) would otherwise
    get a new, empty database that no manager reads."""
    from farmhand.manager.db.migrate import upgrade  # Alembic: only when a command runs

    try:
        settings = ManagerSettings.from_env(data_dir=data_dir, database_url=database_url)
    except SettingsError as error:  # a FARMHAND_* variable out of range: one line
        raise NoDatabase(str(error)) from None
    where = told_where(settings.database_url, settings.data_dir)
    try:
        check_database_url(settings.resolved_database_url, where)
    except StartRefused as error:
        raise NoDatabase(str(error)) from None
    url = make_url(settings.resolved_database_url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).is_file():
        place = f"in {settings.data_dir}" if settings.database_url is None else f"at {sqlite_file}"
        raise NoDatabase(
            f"no farmhand database {place}: give the --data-dir (or FARMHAND_DATA_DIR) "
            "of the manager, which creates its database at its first start"
        )
    db = Database(settings.resolved_database_url)
    try:
        upgrade(db.engine)
        with db.transaction() as session:
            yield session
    except DBAPIError as error:
        if sqlite_file and damaged(error):
            raise NoDatabase(unusable_database(error, sqlite_file)) from None
        if not isinstance(error, OperationalError):
            raise
        raise NoDatabase(
            cannot_use_database(error, settings.resolved_database_url, where)
        ) from None
    finally:
        db.dispose()


EXACT = ("id", "name", "email")
"""The prefixes that say how an argument names an account (`id:4`, `name:dave`,
`email:dave@example.com`), as `farmhand runner … id:N` picks one runner."""


def find(session: Session, who: str) -> User:
    """The one account `who` names: `id:N`, `name:NAME` or `email:ADDRESS` exactly, or
    else an id, a name or an e-mail (compared as sign-in does, `accounts.find_by_email`).

    `AccountError` when nobody matches, and when a bare argument names two accounts
    (a user named `4` and the user with id 4; a user named `dave@example.com` and the
    one with that e-mail): these commands disable, delete and set passwords, and taking
    the first match once acted on the wrong person without a word. The refusal lists
    the candidates and the exact form of each."""
    way, _, rest = who.partition(":")
    if way in EXACT and rest:
        found = _by(session, way, rest)
        if found is None:
            raise AccountError(
                404, f"no user with {way} {rest!r} (farmhand users list shows everyone)"
            )
        return found
    candidates: dict[int, tuple[User, str]] = {}
    for way in EXACT:
        user = _by(session, way, who)
        if user is not None and user.id not in candidates:
            candidates[user.id] = (user, way)
    if not candidates:
        raise AccountError(404, f"no user {who!r} (farmhand users list shows everyone)")
    if len(candidates) > 1:
        which = ", ".join(
            f"{user.name} by its {'e-mail' if way == 'email' else way} "
            f"({way}:{getattr(user, way)})"  # each way is the User attribute of its name
            for user, way in candidates.values()
        )
        raise AccountError(
            409,
            f"{who!r} names {len(candidates)} accounts, so nothing was changed: {which}; "
            "give the one you mean in that exact form",
        )
    return next(iter(candidates.values()))[0]


def _by(session: Session, way: str, value: str) -> User | None:
    if way == "id":
        # ASCII digits of a size a database takes ("²".isdigit() too, and int() fails).
        return session.get(User, int(value)) if re.fullmatch("[0-9]{1,18}", value) else None
    if way == "name":
        return session.scalar(select(User).where(User.name == value))
    return accounts.find_by_email(session, value) if value.strip() else None


def auth_settings(data_dir: Path, database_url: str | None) -> AuthSettings:
    """The manager's sign-in settings (its lockout limit and window), read as
    `open_session` reads them (which has already said so if they cannot be)."""
    return ManagerSettings.from_env(data_dir=data_dir, database_url=database_url).auth


def listing(session: Session, auth: AuthSettings | None = None) -> list[tuple[str, ...]]:
    """Everyone, as table rows: id, name, e-mail, role, state (with a sign-in lock, as
    the web's Users table says it, under `auth`'s limits: the defaults unless given),
    ways to sign in."""
    linked = accounts.linked_providers(session)
    users = list(session.scalars(select(User).order_by(User.id)))
    now = utcnow()
    locks = accounts.locked_until(session, auth or AuthSettings(), users, now)
    rows: list[tuple[str, ...]] = []
    for user in users:
        # A password without an e-mail lets nobody in (`accounts.set_password`): one
        # left from before that rule is shown as what it is.
        password = "password" if user.email else "password (no e-mail: unusable)"
        ways = ([password] if user.password_hash else []) + linked.get(user.id, [])
        rows.append((
            str(user.id), user.name, user.email or "-", user.role,
            _state(user, locks.get(user.id), now), ", ".join(ways) or "token only",
        ))  # fmt: skip
    return rows


def _state(user: User, locked_until: datetime | None, now: datetime) -> str:
    state = "disabled" if user.disabled_at else "active"
    if locked_until is None:
        return state
    wait = ratelimit.wait_words(int((locked_until - now).total_seconds()))
    return f"{state}, locked ({wait}; farmhand users unlock)"


def create(
    session: Session,
    *,
    name: str,
    email: str | None,
    role: str,
    password: str | None,
    with_token: bool,
) -> tuple[User, str | None]:
    """A new account, and its first API token when asked (its secret, shown once)."""
    user = accounts.create_user(
        session, utcnow(), name=name, email=email, role=role, password=password
    )
    if not with_token:
        return user, None
    secret = new_token("api")
    session.add(
        ApiToken(user_id=user.id, name="first token", token_hash=token_hash(secret),
                 created_at=utcnow())
    )  # fmt: skip
    return user, secret


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    """`accounts.set_disabled`: refused (`AccountError`) for the last active admin."""
    accounts.set_disabled(session, user, disabled, utcnow())


delete = accounts.delete_user
set_password = accounts.set_password
unlock = accounts.unlock
set_email = accounts.set_email
no_email = accounts.no_email
