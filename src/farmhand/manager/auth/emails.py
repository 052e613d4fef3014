"""E-mail addresses as stored and compared: the one home of their normal form.

A module of its own, importing nothing of farmhand's, so that everything that compares
addresses can call it: the account rules (`accounts`) and the sign-in rate limit's key
(`ratelimit.account_key`), which `accounts` imports (it could not live there without
an import cycle).
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
