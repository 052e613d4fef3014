"""Sign-in rate limits: failed attempts counted per account and per client address.

Failures are rows in the database (`LoginFailure`), not counters in memory, so several
managers sharing a database share the limit and a restart does not reset it. Only
failures count: a person who types their password right is never slowed down by
others, except that an address that keeps failing is held back whatever account it
tries. The limit is a sliding window: once `limit` failures fall in the last `window`
seconds, further attempts are refused (HTTP 429) until the oldest one ages out, and
`Retry-After` says when that is.
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


def record_failure(session: Session, limits: list[Limit], now: datetime, window: float) -> None:
    """Count a failed attempt against every key, and forget their expired failures."""
    since = now - timedelta(seconds=window)
    for limit in limits:
        session.execute(
            delete(LoginFailure).where(LoginFailure.key == limit.key, LoginFailure.at <= since)
        )
        session.add(LoginFailure(key=limit.key, at=now))


def clear(session: Session, key: str) -> None:
    """A successful sign-in forgets the account's failures (not the address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))
