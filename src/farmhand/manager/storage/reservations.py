"""Bytes promised to users' uploads still under way, held against their quota.

Project zips of one user sent at the same time each passed the quota check before the
others' files counted (QA round 8: four honest 45 MiB zips against a 47.7 MiB quota
stored 189 MB), since a zip's files count in the usage only once recorded, after
unpacking. Each admitted zip holds its bytes here until then (`api/projects.py`).
Per manager process: the processes of `--processes N` meet in the quota check after
unpacking, which refuses and removes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(eq=False)
class Claim:
    """One zip's bytes held against its sender from its admission until its files are
    recorded (then they count in the usage itself) or the request ends."""

    user_id: int
    size: int = 0


class Reservations:
    """Project zips admitted and not yet recorded, per user, in this process
    (`ManagerContext.zip_reservations`).

    The quota check of a user's next zip adds what their other zips hold (`others`;
    `api/projects._admit`). A user's checks and recordings take turns on that user's
    lock (`turn`), so a zip counts either here or in the usage, never in neither; other
    users are never kept waiting, and the unpacking itself runs outside the lock."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._turns: dict[int, threading.Lock] = {}
        self._claims: set[Claim] = set()

    def turn(self, user_id: int) -> threading.Lock:
        with self._guard:
            return self._turns.setdefault(user_id, threading.Lock())

    def others(self, claim: Claim) -> int:
        """What the sender's other zips hold: call it on the sender's turn."""
        with self._guard:
            return sum(
                c.size for c in self._claims if c.user_id == claim.user_id and c is not claim
            )

    def hold(self, claim: Claim, size: int) -> None:
        with self._guard:
            claim.size = size
            self._claims.add(claim)

    def release(self, claim: Claim) -> None:
        with self._guard:
            self._claims.discard(claim)
