"""First start: an admin account, its API token and a runner registration token.

The secrets are written to files in the data dir (mode 0600), and their paths printed,
rather than printed themselves, so they do not end up in a terminal scroll-back or a
container log. `FARMHAND_ADMIN_TOKEN` / `FARMHAND_RUNNER_TOKEN` preset them for
automation; a preset token is (re)registered at every start, so it always works. A preset
that differs from the token in its file replaces it: the file's token is revoked, so
changing the variable (a leaked secret, a rotation) is all it takes to retire the old one.
Tokens made through the API are never touched, and a token file is never written over
with a new token: a missing `runner-token` is made again, and a database without an
admin account beside an `admin-token` file refuses to start (the account was deleted,
or the database is not the farm's: `db.presence`).
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
    session: Session, admin_file: Path, runner_file: Path, settings: ManagerSettings
) -> None:
    presets = (
        ("admin", settings.admin_token, admin_file, ApiToken),
        ("runner", settings.runner_token, runner_file, RunnerRegistrationToken),
    )
    for what, preset, path, table in presets:
        old = _replaced(path, preset) if preset is not None else None
        if old is None:
            continue
        session.execute(
            update(table)
            .where(table.token_hash == token_hash(old), table.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        # Workers already registered keep their own secrets; they work on.
        log.warning("preset token replaces the one in its file: that one is revoked", token=what)


def _never_replace(token_file: Path) -> None:
    """Refuse to write a new admin token over one already in its file.

    A database without an admin account beside a token file is not a first start: the
    database was lost or replaced (`db.presence` refuses that case earlier), or the
    admin account was deleted. The file's token is the one people and scripts use, so it
    is never replaced without an operator saying so."""
    if token_file.exists():
        raise StartRefused(
            f"the database has no admin account, but {token_file} holds a token from an "
            "earlier one: refusing to replace it. If this is the right database, move that "
            "file away (a new admin token is written there) or set FARMHAND_ADMIN_TOKEN; "
            "otherwise start on the farm's own database"
        )


def bootstrap(db: Database, settings: ManagerSettings) -> BootstrapReport:
    tightened = make_private(settings.log_dir)
    if tightened:
        log.info("task logs made readable by the manager's account only", files=tightened)
    admin_file = settings.data_dir / "admin-token"
    runner_file = settings.data_dir / "runner-token"
    created = False
    with db.transaction() as session:
        _revoke_replaced(session, admin_file, runner_file, settings)
        admin = session.scalar(select(User).where(User.name == "admin"))
        if admin is None:
            admin = User(name="admin", role="admin", created_at=utcnow())
            session.add(admin)
            session.flush()
            created = True
        admin_token = settings.admin_token
        if admin_token is None and created:
            _never_replace(admin_file)
            admin_token = new_token("api")
        if admin_token is not None:
            _ensure_api_token(session, admin, admin_token)
            _write_secret(admin_file, admin_token)

        runner_token = settings.runner_token
        # Only where there is none: a new token over the file's would lock out every
        # worker that registers with it.
        if runner_token is None and not runner_file.exists():
            runner_token = new_token("runner-registration")
        if runner_token is not None:
            _ensure_registration_token(session, runner_token)
            _write_secret(runner_file, runner_token)
        ensure_test_user(session, settings.auth, utcnow())
    return BootstrapReport(admin_file, runner_file, created)
