"""The scheduling rules' knobs, in one place, taken from the manager's settings."""

from __future__ import annotations

from dataclasses import dataclass

from farmhand.manager.settings import ManagerSettings


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    blocklist_threshold: int = 3
    job_failure_share: float = 0.0
    forgotten_task_after: float = 10.0

    @classmethod
    def from_settings(cls, settings: ManagerSettings) -> Policy:
        return cls(
            max_attempts=settings.max_attempts,
            blocklist_threshold=settings.blocklist_threshold,
            job_failure_share=settings.job_failure_share,
            forgotten_task_after=settings.forgotten_task_after,
        )
