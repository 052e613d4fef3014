"""Bearer secrets: API tokens, runner registration tokens and runner secrets.

Only a SHA-256 of each secret is stored. The secrets are 256 random bits, so a fast hash
is as safe as a slow one here and lets a request be authenticated with one indexed
lookup. Passwords (low entropy) are a different matter and use argon2 elsewhere.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIXES = {"api": "fh_api_", "runner-registration": "fh_reg_", "runner": "fh_run_"}


def new_token(kind: str) -> str:
    return TOKEN_PREFIXES[kind] + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
