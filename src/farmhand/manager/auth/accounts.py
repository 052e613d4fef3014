"""Account policies: who may sign in, with what, and what happens to their sessions.

One home for the rules the API, the web UI, the CLI and start-up share: password
sign-in (rate limited), creating local and OAuth users, e-mail addresses, new
passwords (which lift the account's sign-in lock, as `unlock` does), disabling,
deleting and changing roles, none of which may take the farm's
last active admin away. A password signs in only together with the account's e-mail
address, so an account without one is refused a password rather than given one that
nobody could use (the first start's `admin` has none until an admin gives it one).
Everything here works on an open database session and leaves committing to the caller
(a password sign-in is three steps, so that its slow hash runs outside any transaction:
`begin_password_login`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.auth import ratelimit
from farmhand.manager.auth.emails import normal_email
from farmhand.manager.auth.passwords import (
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)
from farmhand.manager.db.models import Job, OAuthIdentity, User
from farmhand.manager.settings import AuthSettings
from farmhand.shared.web_schemas import USER_NAME_MAX_LENGTH, USER_NAME_PATTERN, plausible_email


class AccountError(Exception):
    """A refusal with the HTTP status it maps to (the CLI shows only the message)."""

    def __init__(
        self, status: int, message: str, retry_after: int | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.code = code
        """A fixed word for pages that must not echo messages (`/login?error=`)."""


@dataclass(frozen=True)
class LoginOutcome:
    """The end of a password sign-in (`finish_password_login`); failures are returned,
    not raised, so that what the step changed is committed along with the answer."""

    user_id: int | None = None
    epoch: int = 0
    error: AccountError | None = None


def find_by_email(session: Session, email: str) -> User | None:
    """The account with this address (`normal_email`), as sign-in, uniqueness and OAuth
    linking look it up: one indexed lookup, since every address is stored in that form
    (migration 0023 rewrote those stored before NFC was part of it). Accounts that
    migration found holding one address in different forms it left as they were, and
    named in a warning: only the one stored in the normal form, if any, is found, until
    an admin gives the others another address."""
    return session.scalar(select(User).where(User.email == normal_email(email)))


def unique_name(session: Session, wanted: str) -> str:
    """A free user name close to `wanted` (an e-mail's local part, a provider's nickname)."""
    base = re.sub(r"[^A-Za-z0-9._@-]+", "-", wanted).strip("-._@")[:90] or "user"
    if not base[0].isalnum():
        base = "u" + base
    name, counter = base, 1
    while session.scalar(select(User.id).where(User.name == name)) is not None:
        counter += 1
        name = f"{base}-{counter}"
    return name


def end_sessions(user: User) -> None:
    """Every session cookie of `user` stops working (see `auth.sessions`)."""
    user.session_epoch = (user.session_epoch or 0) + 1


def no_email(user: User) -> AccountError | None:
    """Why `user` cannot be given a password, if they have no e-mail: sign-in asks for
    an e-mail, so that password could never be used, and saying "password set" would
    leave someone locked out believing they had a way in. (`farmhand users` asks this
    before prompting for a password.)"""
    if user.email:
        return None
    return AccountError(
        409,
        f"{user.name} has no e-mail address, and a password signs in only together with "
        f"one: give {user.name} an e-mail first (on the manager's machine: "
        f"farmhand users set-password {user.name} --email ADDRESS)",
    )


def set_password(session: Session, user: User, password: str) -> None:
    """A new password (own, or set by an admin or `farmhand users`); ends the user's
    sessions. Refused (409) for an account without an e-mail (`no_email`).

    It also forgets the account's failed sign-ins (`unlock`): someone locked out after
    wrong guesses is helped with a new password, and "password set" must mean they can
    sign in with it now, not in a quarter of an hour. Their address's limit stays."""
    refusal = no_email(user)
    if refusal is not None:
        raise refusal
    problem = password_problem(password)
    if problem is not None:
        raise AccountError(400, problem)
    user.password_hash = hash_password(password)
    end_sessions(user)
    unlock(session, user)


def _password_change_key(user: User) -> str:
    return f"password:{user.id}"


def lock_keys(user: User) -> list[str]:
    """The rate-limit keys that lock `user` themself (never an address's): sign-in with
    their e-mail, and guesses of their old password when changing it."""
    keys = [ratelimit.account_key(user.email)] if user.email else []
    return keys + ([_password_change_key(user)] if user.id is not None else [])


def unlock(session: Session, user: User) -> None:
    """Forget `user`'s failed sign-ins (and old-password guesses), so they may try
    again at once: an admin's "unlock", and part of setting a password."""
    keys = lock_keys(user)
    if keys:
        ratelimit.clear(session, *keys)


def locked_until(
    session: Session, settings: AuthSettings, users: Iterable[User], now: datetime
) -> dict[int, datetime]:
    """When each locked-out user of `users` may sign in again (absent: not locked), for
    the admin's listing. Only the sign-in lock: guesses of an old password lock its
    change, not sign-in (a user shown "locked" signed in fine), and the per-address
    limit is no account's lock."""
    owners: dict[str, int] = {}
    for user in users:
        if user.email:
            owners[ratelimit.account_key(user.email)] = user.id
    locked = ratelimit.locked_until(
        session, list(owners), settings.login_failures_per_account, now, settings.login_window
    )
    until: dict[int, datetime] = {}
    for key, at in locked.items():
        user_id = owners[key]
        until[user_id] = max(at, until.get(user_id, at))
    return until


def _free_email(session: Session, email: str, user: User | None = None) -> str:
    """`email` as stored (`normal_email`: trimmed, lower case, NFC) if it is an address
    no other account has (compared as sign-in does); else a 400 or 409."""
    address = normal_email(email)
    if not plausible_email(address):
        raise AccountError(400, f"{address[:80]!r} is not an e-mail address (one @, no spaces)")
    holder = find_by_email(session, address)
    if holder is not None and holder is not user:
        raise AccountError(409, "a user with that e-mail already exists")
    return address


def set_email(session: Session, user: User, email: str) -> None:
    """Give `user` the e-mail address they sign in with (the first start's `admin` has
    none). Sessions go on: the person is the same, only their sign-in name changes. An
    OAuth identity whose verified address is this one later links to this account, as
    for an account an admin creates with it (docs/SECURITY.md)."""
    old = user.email
    user.email = _free_email(session, email, user)
    if old is not None:
        settle_email_forms(session, normal_email(old))


def settle_email_forms(session: Session, address: str) -> None:
    """Store `address` in its normal form if one account alone now holds it in another.

    Migration 0023 left alone the accounts whose addresses were one in different forms
    (`Bob@Example.COM`, `BOB@example.com`), for an admin to give all but one another
    address. Sign-in looks an address up in its normal form only, so the last one,
    still in its old form, could not sign in once the others had moved: it is rewritten
    here, when another account leaves the address (a new address, or deleted). Reads
    every account with an address, in Python (the forms differ by Unicode, which SQL
    does not compare): only on those two rare admin actions."""
    holders = [
        user
        for user in session.scalars(select(User).where(User.email.is_not(None)))
        if user.email is not None and normal_email(user.email) == address
    ]
    if len(holders) == 1 and holders[0].email != address:
        holders[0].email = address


def active_admins(session: Session, *, lock: bool = False) -> list[User]:
    """The accounts that can administer the farm now: role `admin`, not disabled.

    `lock` holds their rows until the transaction ends (PostgreSQL; SQLite's
    `BEGIN IMMEDIATE` already lets one writer in at a time), so two admins taking each
    other away at the same moment cannot both see the other one left."""
    query = select(User).where(User.role == "admin", User.disabled_at.is_(None)).order_by(User.id)
    return list(session.scalars(query.with_for_update() if lock else query))


def keep_an_admin(session: Session, user: User, action: str) -> None:
    """Refuse (409) to `action` (delete, disable, demote) the farm's last active admin.

    Every way of taking an admin away (the API, the web UI, `farmhand users`) comes
    through here: without an active admin nobody can manage accounts or runners over
    the API, and the manager's start-up (`bootstrap`) has no account to trust."""
    # Read under the lock, not from `user`, which may have been loaded before it.
    admins = [admin.id for admin in active_admins(session, lock=True)]
    if admins == [user.id]:
        raise AccountError(
            409,
            f"cannot {action} {user.name}: they are the farm's only active admin; "
            "make another user an admin first",
        )


def set_disabled(session: Session, user: User, disabled: bool, now: datetime) -> None:
    if disabled and user.disabled_at is None:
        keep_an_admin(session, user, "disable")
        user.disabled_at = now
        end_sessions(user)
    elif not disabled:
        user.disabled_at = None


def set_role(session: Session, user: User, role: str) -> None:
    if role != "admin":
        keep_an_admin(session, user, "demote")
    user.role = role


def delete_user(session: Session, user: User) -> None:
    """Delete an account and its tokens and identities; not while it owns jobs (their
    history would lose its owner), for which disabling is the answer, nor the last
    active admin."""
    if session.scalar(select(Job.id).where(Job.owner_id == user.id).limit(1)) is not None:
        raise AccountError(
            409, f"{user.name} owns jobs; delete those first, or disable the user instead"
        )
    keep_an_admin(session, user, "delete")
    session.delete(user)
    if user.email is not None:
        session.flush()
        settle_email_forms(session, normal_email(user.email))


def create_user(
    session: Session,
    now: datetime,
    *,
    name: str | None,
    email: str | None,
    role: str = "user",
    password: str | None = None,
) -> User:
    """A new account; the name defaults to the e-mail's local part. 409 on a clash;
    400 for a password without an e-mail (it could not be used: `set_password`)."""
    email = _free_email(session, email) if email else None
    if password is not None and email is None:
        raise AccountError(
            400,
            "a password signs in only together with an e-mail address: give an e-mail "
            "too, or no password",
        )
    if name is not None and not (
        len(name) <= USER_NAME_MAX_LENGTH and re.fullmatch(USER_NAME_PATTERN, name)
    ):  # as the API's schema says; `farmhand users create` has no schema before this
        raise AccountError(
            400,
            f"{name[:80]!r} is not a user name: letters, digits and . _ @ -, starting with "
            f"a letter or digit, at most {USER_NAME_MAX_LENGTH} characters",
        )
    if name is not None and session.scalar(select(User.id).where(User.name == name)):
        raise AccountError(409, "a user with that name already exists")
    if name is None:
        name = unique_name(session, (email or "user").split("@")[0])
    user = User(name=name, email=email, role=role, created_at=now, session_epoch=0)
    if password is not None:
        set_password(session, user, password)
        user.session_epoch = 0
    session.add(user)
    session.flush()
    return user


def _limits(settings: AuthSettings, account: str, address: str | None) -> list[ratelimit.Limit]:
    return [
        ratelimit.Limit(account, settings.login_failures_per_account),
        ratelimit.Limit(ratelimit.address_key(address), settings.login_failures_per_address),
    ]


def change_own_password(
    session: Session,
    settings: AuthSettings,
    user: User,
    old_password: str,
    new_password: str,
    address: str | None,
    now: datetime,
) -> AccountError | None:
    """A person's own password change: the old password is required (when there is
    one) and wrong guesses count like failed sign-ins, so a borrowed session cannot be
    used to find the password. Returned, not raised, so the failure is committed."""
    limits = _limits(settings, _password_change_key(user), address)
    # The turn is held while the old password is checked.
    wait = ratelimit.wait_for_turn(session, limits, now, settings.login_window)
    if wait is not None:
        return AccountError(
            429, f"too many wrong passwords; try again in {ratelimit.wait_words(wait)}", wait
        )
    if user.password_hash is not None and not verify_password(user.password_hash, old_password):
        ratelimit.record_failure(session, limits, now, settings.login_window)
        return AccountError(403, "the old password is wrong")
    try:
        set_password(session, user, new_password)
    except AccountError as error:
        return error
    return None


@dataclass(frozen=True)
class LoginAttempt:
    """A password sign-in let through the limits (`begin_password_login`), its failure
    already counted: what checking the password and finishing need, with no session."""

    user_id: int | None
    """The account the e-mail names; None: no such account (the password is still
    checked, against a dummy hash)."""
    password_hash: str | None
    """The account's hash when the attempt began: checked, and compared again at the
    end, so a password an admin replaced meanwhile does not sign in."""
    account_key: str
    failures: list[int]
    """This attempt's failure rows (`ratelimit.record_failure`): taken back if it is right."""


@dataclass(frozen=True)
class PasswordProof:
    """A password that matched its `LoginAttempt`'s hash (`check_login_password`)."""

    new_hash: str | None = None
    """Its hash with today's parameters, when the stored one is weaker (`needs_rehash`):
    made here, outside any transaction, since hashing is the slow part."""


def begin_password_login(
    session: Session,
    settings: AuthSettings,
    email: str,
    address: str | None,
    now: datetime,
) -> LoginAttempt:
    """Step 1 of a password sign-in, in a short write transaction of its own: let the
    attempt through the per-account and per-address limits, or refuse it (raised:
    nothing was written, no password is checked), and count it as a failure at once.

    A sign-in is three steps so that the slow password hash runs with no transaction
    open (on SQLite a write transaction holds the whole farm's writes: heartbeats,
    claims) while parallel attempts are still counted exactly: each takes its keys'
    turn (`ratelimit.take_turn`), counts, and records itself before committing, so the
    next one counts it. Step 2, `check_login_password`, checks the password in no
    transaction; step 3, `finish_password_login`, takes the failure back if it was right.
    A manager that dies between steps 1 and 3 leaves the attempt counted as a failure:
    on the safe side, and it ages out with the window. For the same reason an attempt
    with the right password may be refused while parallel ones (of its account, or its
    address) are being checked, as if they had already failed."""
    if not settings.enable_local_auth:
        raise AccountError(404, "sign-in with a password is turned off")
    limits = _limits(settings, ratelimit.account_key(email), address)
    wait = ratelimit.wait_for_turn(session, limits, now, settings.login_window)
    if wait is not None:
        raise AccountError(
            429, f"too many failed sign-ins; try again in {ratelimit.wait_words(wait)}", wait
        )
    user = find_by_email(session, email) if email.strip() else None
    return LoginAttempt(
        user_id=user.id if user is not None else None,
        password_hash=user.password_hash if user is not None else None,
        account_key=limits[0].key,
        failures=ratelimit.record_failure(session, limits, now, settings.login_window),
    )


def _wrong_password() -> AccountError:
    return AccountError(401, "wrong e-mail or password")


def check_login_password(attempt: LoginAttempt, password: str) -> PasswordProof:
    """Step 2 (`begin_password_login`): whether `password` is the attempt's account's,
    with no session (slow: a hash). Wrong (raised 401), the failure counted in step 1
    stands. No such account takes as long (`verify_password` hashes a dummy), so the
    answer's time does not tell which addresses have accounts."""
    if not verify_password(attempt.password_hash, password) or attempt.password_hash is None:
        raise _wrong_password()
    new_hash = hash_password(password) if needs_rehash(attempt.password_hash) else None
    return PasswordProof(new_hash)


def finish_password_login(
    session: Session, attempt: LoginAttempt, proof: PasswordProof
) -> LoginOutcome:
    """Step 3 (`begin_password_login`), for a password `check_login_password` accepted:
    take back the attempt's failures, and sign in unless the account was disabled
    (403), or deleted or given another password since step 1 (401, the failure stands)."""
    user = session.get(User, attempt.user_id) if attempt.user_id is not None else None
    if user is None or user.password_hash != attempt.password_hash:
        return LoginOutcome(error=_wrong_password())
    ratelimit.forget(session, attempt.failures)
    if user.disabled_at is not None:
        return LoginOutcome(error=AccountError(403, "this account is disabled"))
    ratelimit.clear(session, attempt.account_key)
    if proof.new_hash is not None:
        user.password_hash = proof.new_hash
    return LoginOutcome(user_id=user.id, epoch=user.session_epoch)


def email_domain_allowed(settings: AuthSettings, email: str | None, verified: bool) -> bool:
    if not settings.allowed_email_domains:
        return True
    if not email or not verified or "@" not in email:
        return False
    return normal_email(email).rsplit("@", 1)[1] in settings.allowed_email_domains


def linked_providers(
    session: Session, user_ids: Iterable[int] | None = None
) -> dict[int, list[str]]:
    """The OAuth providers linked to each user (of `user_ids`, or everyone's), in the
    order they were linked; a user without any is absent."""
    query = select(OAuthIdentity.user_id, OAuthIdentity.provider).order_by(OAuthIdentity.id)
    if user_ids is not None:
        query = query.where(OAuthIdentity.user_id.in_(list(user_ids)))
    linked: dict[int, list[str]] = {}
    for user_id, provider in session.execute(query):
        linked.setdefault(user_id, []).append(provider)
    return linked


def oauth_user(
    session: Session,
    settings: AuthSettings,
    now: datetime,
    *,
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
    nickname: str | None,
) -> User:
    """The user an OAuth identity signs in as, linking or creating them on first use.

    An identity is known by provider + subject (e-mails change, subjects do not). A new
    identity with a verified e-mail of an existing account is linked to that account, so
    an admin can create people by e-mail and let them use Google; otherwise a new `user`
    is made, if the sign-up domain rule allows it.

    Only an address the provider says is verified (OIDC's `email_verified`, Discord's
    `verified`) is ever used: to link, as a new account's e-mail, or stored with the
    identity. Anyone can type someone else's address at a provider that does not check
    it; stored on an account, it would later link the address's real owner to that
    account. An address that is no plausible e-mail (a newline or NUL in it, no `@`)
    is not used either: it is no sign-in name, and it would end up in logs and
    exports. An account without an e-mail takes its identity's address once the
    provider says it is verified (and no other account has it).
    """
    address = normal_email(email) if email and email_verified and plausible_email(email) else None
    identity = session.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == provider, OAuthIdentity.subject == subject
        )
    )
    if identity is not None:
        user = session.get(User, identity.user_id)
        assert user is not None  # cascade: an identity never outlives its user
        identity.email = address
        if user.email is None and address is not None and find_by_email(session, address) is None:
            user.email = address
    else:
        existing = find_by_email(session, address) if address is not None else None
        if existing is not None:
            user = existing
        else:
            if not email_domain_allowed(settings, email, email_verified):
                raise AccountError(
                    403,
                    "sign-up is limited to e-mail addresses of the farm's allowed domains",
                    code="domain",
                )
            user = create_user(
                session,
                now,
                name=unique_name(session, nickname or (email or provider).split("@")[0]),
                email=address,
            )
        session.add(
            OAuthIdentity(
                user_id=user.id,
                provider=provider,
                subject=subject,
                email=address,
                created_at=now,
            )
        )
    if user.disabled_at is not None:
        raise AccountError(403, "this account is disabled", code="disabled")
    return user


def ensure_test_user(session: Session, settings: AuthSettings, now: datetime) -> bool:
    """`LOCAL_TEST_EMAIL` / `LOCAL_TEST_PASSWORD`: make that user if missing (JiggaBlend's)."""
    if not settings.local_test_email or not settings.local_test_password:
        return False
    if find_by_email(session, settings.local_test_email) is not None:
        return False
    create_user(
        session,
        now,
        name=None,
        email=settings.local_test_email,
        password=settings.local_test_password,
    )
    return True
