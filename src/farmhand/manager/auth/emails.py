"""E-mail addresses as stored and compared: the one home of their normal form.

A module of its own, importing nothing of farmhand's, so that everything that compares
addresses can call it: the account rules (`accounts`), the sign-in rate limit's key
(`ratelimit.account_key`) and the sign-up domains (`settings.AuthSettings`), both of
which `accounts` imports (it could not live there without an import cycle). Migration
0023, which rewrote addresses stored before NFC was part of it, holds a frozen copy of
its own: a migration does what it did when written, whatever becomes of this one.
"""

from __future__ import annotations

import unicodedata


def normal_email(email: str) -> str:
    """An e-mail address as stored and compared: trimmed, lower case, Unicode NFC.

    NFC because "é" can be typed as one code point or as "e" and a combining accent:
    both look the same and mean the same address, and without it two accounts could
    hold what a person sees as one address, and sign-in would find only the account
    whose form was typed. NFC is applied last so that the stored form is NFC even
    where lower-casing a character gives a decomposed one."""
    return unicodedata.normalize("NFC", email.strip().lower())


def normal_domain(domain: str) -> str:
    """A domain as the domain part of a `normal_email` address is: trimmed, lower case,
    NFC. For the sign-up domains an admin writes (`ALLOWED_EMAIL_DOMAINS`): written
    with capitals or a decomposed accent, a domain compared as written matched no
    address, and its people could not sign up."""
    return normal_email(domain)
