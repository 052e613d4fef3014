"""First start: an admin account, its API token and a runner registration token.

The secrets are written to files in the data dir (mode 0600), and their paths printed,
rather than printed themselves, so they do not end up in a terminal scroll-back or a
container log. `FARMHAND_ADMIN_TOKEN` / `FARMHAND_RUNNER_TOKEN` preset them for
automation; a preset token is (re)registered at every start, so it always works. A preset
that differs from the token in its file replaces it: the file's token is revoked, so
changing the variable (a leaked secret, a rotation) is all it takes to retire the old one.
Tokens made through the API are never touched, and a token file is never written over
with a new token: a missing `runner-token` is made again, and a database without any
admin account beside an `admin-token` file refuses to start (the database is not the
farm's: `db.presence`, or every admin was deleted).

The admin token is the account named `admin`'s. Any active admin keeps the farm going:
once `admin` is deleted, disabled or demoted (`accounts.keep_an_admin` keeps another
admin), the manager starts with one warning that `admin-token` gives no admin access,
and leaves the file as it is; a preset of a deleted `admin` is not registered, so the
account does not come back at the next restart.
`LOCAL_TEST_EMAIL` / `LOCAL_TEST_PASSWORD` add a local user with a password if missing
(JiggaBlend's variables, for trying a farm out).

Task logs that an earlier version wrote readable to every local account are made
private here, once (`storage.logs.make_private`); the database's files are made private
when it is opened (`db.engine.private_sqlite_files`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from farmhand.manager.auth import accounts
from farmhand.manager.auth.accounts import ensure_test_user
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import ApiToken, RunnerRegistrationToken, User
from farmhand.manager.db.presence import StartRefused
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage.logs import make_private

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BootstrapReport:
    admin_token_file: Path
    runner_token_file: Path
    created_admin: bool


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")


def _ensure_api_token(session: Session, user: User, token: str) -> None:
    digest = token_hash(token)
    existing = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if existing is None:
        session.add(
            ApiToken(user_id=user.id, name="bootstrap", token_hash=digest, created_at=utcnow())
        )
    else:
        existing.revoked_at = None  # a preset works at every start, even one set back


def _ensure_registration_token(session: Session, token: str) -> None:
    digest = token_hash(token)
    existing = session.scalar(
        select(RunnerRegistrationToken).where(RunnerRegistrationToken.token_hash == digest)
    )
    if existing is None:
        session.add(RunnerRegistrationToken(token_hash=digest, created_at=utcnow()))
    else:
        existing.revoked_at = None


def _replaced(path: Path, token: str) -> str | None:
    """The token in `path` if `token` replaces it (another one is there), else None."""
    try:
        previous = path.read_text().strip()
    except FileNotFoundError:
        return None
    return previous if previous and previous != token else None


def _revoke_replaced(
    session: Session,
    what: str,
    path: Path,
    preset: str,
    table: type[ApiToken] | type[RunnerRegistrationToken],
) -> None:
    old = _replaced(path, preset)
    if old is None:
        return
    session.execute(
        update(table)
        .where(table.token_hash == token_hash(old), table.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    # Workers already registered keep their own secrets; they work on.
    log.warning("preset token replaces the one in its file: that one is revoked", token=what)


def _never_replace(token_file: Path) -> None:
    """Refuse to write a new admin token over one already in its file.

    A database without any admin account beside a token file is not a first start: the
    database was lost or replaced (`db.presence` refuses that case earlier), or every
    admin account was deleted (which `accounts.keep_an_admin` no longer allows). The
    file's token is the one people and scripts use, so it is never replaced without an
    operator saying so."""
    if token_file.exists():
        raise StartRefused(
            f"the database has no admin account, but {token_file} holds a token from an "
            "earlier one: refusing to replace it. If this is the right database, make an "
            "admin (farmhand users create NAME --role admin), move that file away (a new "
            "admin token is written there) or set FARMHAND_ADMIN_TOKEN; otherwise start "
            "on the farm's own database"
        )


def _token_file_problem(session: Session, path: Path) -> str | None:
    """Why the token in `path` gives no admin access (None: it does, or no file).

    The file is the first start's token of the account named `admin`; that account may
    since have been deleted, disabled or demoted while other admins run the farm, and
    its token revoked. The file is then only stale: said, never replaced or refused."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not token:
        return "it is empty"
    row = session.execute(
        select(ApiToken.revoked_at, User.name, User.role, User.disabled_at)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash(token))
    ).first()
    if row is None:
        return "no account has it (the account it was made for was deleted)"
    if row.revoked_at is not None:
        return f"it was revoked (it is {row.name}'s)"
    if row.disabled_at is not None:
        return f"its account, {row.name}, is disabled"
    if row.role != "admin":
        return f"its account, {row.name}, is not an admin"
    return None


def _names(users: list[User]) -> str:
    """Who can administer the farm, for a warning that says whose token to use."""
    if not users:
        return "none"
    more = f" and {len(users) - 5} more" if len(users) > 5 else ""
    return ", ".join(user.name for user in users[:5]) + more


def _admin_token(session: Session, admin_file: Path, settings: ManagerSettings) -> bool:
    """The admin account and its token file at a start; True if the account was made.

    The account named `admin` is made, with a new token in `admin-token`, only when the
    database has no admin account at all (a first start). The file is written only with
    that token or with `FARMHAND_ADMIN_TOKEN`, which is the `admin` account's: once
    that account is deleted (other admins run the farm) the variable is not registered,
    so a deliberately deleted admin does not come back at the next restart. Whatever the
    file holds that gives no admin access is said in one warning and left as it is."""
    preset = settings.admin_token
    owner = session.scalar(select(User).where(User.name == "admin"))
    any_admin = session.scalar(select(User.id).where(User.role == "admin").limit(1))
    created = owner is None and any_admin is None
    token = preset
    if created:
        if token is None:
            _never_replace(admin_file)
            token = new_token("api")
        owner = User(name="admin", role="admin", created_at=utcnow())
        session.add(owner)
        session.flush()
    if token is not None and owner is None:
        log.warning(
            "FARMHAND_ADMIN_TOKEN is not registered: it is the token of the account "
            "'admin', which was deleted; unset the variable, or make that account again "
            "(farmhand users create admin --role admin)",
            active_admins=_names(accounts.active_admins(session)),
        )
        return created
    if token is not None and owner is not None:
        _revoke_replaced(session, "admin", admin_file, token, ApiToken)
        _ensure_api_token(session, owner, token)
        _write_secret(admin_file, token)
    problem = _token_file_problem(session, admin_file)
    if problem is not None:
        log.warning(
            "the admin token file holds a token that gives no admin access (the file is "
            "left as it is)",
            file=str(admin_file),
            reason=problem,
            active_admins=_names(accounts.active_admins(session)),
        )
    return created


def bootstrap(db: Database, settings: ManagerSettings) -> BootstrapReport:
    tightened = make_private(settings.log_dir)
    if tightened:
        log.info("task logs made readable by the manager's account only", files=tightened)
    admin_file = settings.data_dir / "admin-token"
    runner_file = settings.data_dir / "runner-token"
    with db.transaction() as session:
        created = _admin_token(session, admin_file, settings)
        if not accounts.active_admins(session):
            log.warning(
                "the farm has no active admin: nobody can manage accounts or runners "
                "over the API; on this machine, farmhand users enable NAME (or farmhand "
                "users create NAME --role admin)"
            )
        runner_token = settings.runner_token
        if runner_token is not None:
            _revoke_replaced(session, "runner", runner_file, runner_token, RunnerRegistrationToken)
        # Only where there is none: a new token over the file's would lock out every
        # worker that registers with it.
        if runner_token is None and not runner_file.exists():
            runner_token = new_token("runner-registration")
        if runner_token is not None:
            _ensure_registration_token(session, runner_token)
            _write_secret(runner_file, runner_token)
        ensure_test_user(session, settings.auth, utcnow())
    return BootstrapReport(admin_file, runner_file, created)
