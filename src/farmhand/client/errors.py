"""Errors raised by the HTTP client.

Callers (CLI, worker, add-on) must tell "the manager said no" apart from "the manager
could not be reached": the first is shown to a person or fails a task, the second is
retried because a manager restart must not lose work.
"""

from __future__ import annotations


class FarmhandError(Exception):
    """The manager answered with an error status, or its answer made no sense."""

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code

    def __str__(self) -> str:
        if self.status_code is None:
            return self.detail
        return f"{self.detail} (HTTP {self.status_code})"

    @property
    def is_server_error(self) -> bool:
        """5xx answers are bugs or overload on the manager's side: worth a retry."""
        return self.status_code is not None and self.status_code >= 500


class ManagerUnreachable(FarmhandError):
    """No answer at all: connection refused, DNS failure, timeout, broken stream."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, None)


def is_retryable(error: BaseException) -> bool:
    """Whether waiting and trying again may help (unreachable, 5xx, 429, 503)."""
    if isinstance(error, ManagerUnreachable):
        return True
    if isinstance(error, FarmhandError) and error.status_code is not None:
        return error.status_code >= 500 or error.status_code == 429
    return False
