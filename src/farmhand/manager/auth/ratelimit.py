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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
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


def record_failure(session: Session, limits: list[Limit], now: datetime, window: float) -> None:
    """Count a failed attempt against every key, and forget their expired failures."""
    since = now - timedelta(seconds=window)
    for limit in limits:
        session.execute(
            delete(LoginFailure).where(LoginFailure.key == limit.key, LoginFailure.at <= since)
        )
        session.add(LoginFailure(key=limit.key, at=now))


def clear(session: Session, *keys: str) -> None:
    """Forget these keys' failures: an account's (never an address's) after a successful
    sign-in, a password set by an admin, or an unlock."""
    session.execute(delete(LoginFailure).where(LoginFailure.key.in_(keys)))
