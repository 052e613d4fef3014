"""Sign-in rate limits: failed attempts counted per account and per client address.

Failures are rows in the database (`LoginFailure`), not counters in memory, so several
managers sharing a database share the limit and a restart does not reset it. Only
failures count: a person who types their password right is never slowed down by
others, except that an address that keeps failing is held back whatever account it
tries. The limit is a sliding window: once `limit` failures fall in the last `window`
seconds, further attempts are refused (HTTP 429) until the oldest one ages out, and
`Retry-After` says when that is.

An account's limit (not an address's) is also lifted by an admin: setting the account's
password, or unlocking it (`accounts.unlock`), forgets its failures, since the person
locked out is usually the one the admin is helping. The per-address limit stays: it
holds back someone guessing from one place, whoever they try.

Attempts made at the same moment are counted exactly, not each against the count
before the others: an attempt takes its keys' turn (`take_turn`) in the transaction
that counts them and records it, so the next one counts after it has committed. On
SQLite that transaction's `BEGIN IMMEDIATE` already lets one writer in at a time; on
PostgreSQL (READ COMMITTED) two transactions would each count the same rows and both
go on, so each key has an advisory lock, held until the transaction ends. A sign-in
records its attempt as a failure up front and removes it again once the password is
right (`accounts.begin_password_login`), so the slow password check needs neither the
lock nor a transaction.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from farmhand.manager.auth.emails import normal_email
from farmhand.manager.db.models import LoginFailure


@dataclass(frozen=True)
class Limit:
    key: str
    limit: int


def account_key(email: str) -> str:
    """One key per address, whatever its case or Unicode form: the address as accounts
    store and compare it (`emails.normal_email`), so "Élise@…" typed with a precomposed
    "É" and with "E" plus a combining accent count against one limit."""
    return "account:" + normal_email(email)[:380]


def address_key(address: str | None) -> str:
    return "address:" + (address or "unknown")[:380]


def lock_id(key: str) -> int:
    """A key's PostgreSQL advisory lock: a stable signed 64-bit hash of it (the same in
    every manager process and release, unlike Python's `hash`). Two keys sharing one
    would only wait for each other now and then."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def take_turn(session: Session, limits: list[Limit]) -> None:
    """Wait until no other transaction is counting or recording attempts on these keys,
    and hold them until this one ends (commit or rollback): call it before
    `retry_after`, in the transaction that then records the attempt.

    PostgreSQL: `pg_advisory_xact_lock` per key, in one order (sorted) so that two
    attempts sharing an address and an account cannot each hold one and wait for the
    other. SQLite: nothing to do, `BEGIN IMMEDIATE` let this transaction in alone."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for lock in sorted({lock_id(limit.key) for limit in limits}):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})


def wait_for_turn(
    session: Session, limits: list[Limit], now: datetime, window: float
) -> int | None:
    """`take_turn`, then `retry_after`: how an attempt is let through its limits (the
    turn first, so that the count it makes is exact)."""
    take_turn(session, limits)
    return retry_after(session, limits, now, window)


def retry_after(session: Session, limits: list[Limit], now: datetime, window: float) -> int | None:
    """Seconds until another attempt is allowed, or None when one is allowed now."""
    since = now - timedelta(seconds=window)
    wait = 0.0
    for limit in limits:
        count, oldest = session.execute(
            select(func.count(), func.min(LoginFailure.at)).where(
                LoginFailure.key == limit.key, LoginFailure.at > since
            )
        ).one()
        if count >= limit.limit and oldest is not None:
            # Good enough: the window reopens when the oldest counted failure ages out.
            wait = max(wait, (oldest - since).total_seconds())
    return max(1, math.ceil(wait)) if wait > 0 else None


def locked_until(
    session: Session, keys: list[str], limit: int, now: datetime, window: float
) -> dict[str, datetime]:
    """Of `keys`, those at their `limit` now, each with when it reopens (as `retry_after`
    counts): one query for a whole list of accounts (the admin's user listing)."""
    if not keys:
        return {}
    since = now - timedelta(seconds=window)
    rows = session.execute(
        select(LoginFailure.key, func.count(), func.min(LoginFailure.at))
        .where(LoginFailure.key.in_(keys), LoginFailure.at > since)
        .group_by(LoginFailure.key)
    )
    return {
        key: oldest + timedelta(seconds=window)
        for key, count, oldest in rows
        if count >= limit and oldest is not None
    }


def wait_words(seconds: int) -> str:
    """A wait as people read it: whole minutes, rounded up ("15 min"); `Retry-After`
    keeps the exact seconds for programs."""
    return f"{max(1, math.ceil(seconds / 60))} min"


def record_failure(
    session: Session, limits: list[Limit], now: datetime, window: float
) -> list[int]:
    """Count a failed attempt against every key, and forget their expired failures; the
    rows' ids, for `forget` to take them back should the attempt turn out right."""
    since = now - timedelta(seconds=window)
    rows = []
    for limit in limits:
        session.execute(
            delete(LoginFailure).where(LoginFailure.key == limit.key, LoginFailure.at <= since)
        )
        rows.append(LoginFailure(key=limit.key, at=now))
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def forget(session: Session, failures: list[int]) -> None:
    """Take back the failures `record_failure` counted for an attempt that succeeded."""
    if failures:
        session.execute(delete(LoginFailure).where(LoginFailure.id.in_(failures)))


def clear(session: Session, *keys: str) -> None:
    """Forget these keys' failures: an account's (never an address's) after a successful
    sign-in, a password set by an admin, or an unlock."""
    session.execute(delete(LoginFailure).where(LoginFailure.key.in_(keys)))
