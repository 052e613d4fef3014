"""Errors raised by the HTTP client.

Callers (CLI, worker, add-on) must tell "the manager said no" apart from "the manager
could not be reached": the first is shown to a person or fails a task, the second is
retried because a manager restart must not lose work.
"""

from __future__ import annotations


class FarmhandError(Exception):
    """The manager answered with an error status, or its answer made no sense."""

    def __init__(
        self, detail: str, status_code: int | None = None, *, runner_deleted: bool = False
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code
        self.runner_deleted = runner_deleted
        """A 401 saying an admin deleted this runner (`X-Farmhand-Runner: deleted`), not
        that its secret is unknown: a worker then stops rather than registering again."""

    def __str__(self) -> str:
        if self.status_code is None:
            return self.detail
        return f"{self.detail} (HTTP {self.status_code})"

    @property
    def is_server_error(self) -> bool:
        """5xx answers are bugs or overload on the manager's side: worth a retry."""
        return self.status_code is not None and self.status_code >= 500


RUNNER_STATE_HEADER = "X-Farmhand-Runner"
"""The manager's word on a runner whose secret it refuses (`deleted`)."""


class ManagerUnreachable(FarmhandError):
    """No answer at all: connection refused, DNS failure, timeout, broken stream."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, None)


class JobTooLarge(FarmhandError):
    """A job whose manifest the manager would refuse for its size: refused by the client
    before a byte of it (or of its files) is sent, since packing and uploading thousands
    of files only to hear 413 at the end wastes the user's hour."""

    def __init__(self, files: int, size: int | None, limit: int, max_files: int) -> None:
        measure = (
            f"its manifest would be {size / 1024**2:.1f} MiB; the manager takes at most "
            f"{limit // 1024**2} MiB"
            if size is not None
            else f"a job may have at most {max_files:,}"
        )
        super().__init__(
            f"the job lists {files:,} files ({measure}): nothing was uploaded. Split the "
            "job (render the frame range in parts), use fewer files (a video instead of "
            "an image sequence, shorter folder names), or render from shared storage "
            "(--shared)"
        )
        self.files = files


class TilesRefused(FarmhandError):
    """A job in tiles of a scene that renders several views (stereo, multi-view), which
    the manager refuses as its worker would (`blendscene.tiles_refusal`): refused by the
    client before anything is packed or sent, as the worker's refusal came only after
    the upload, and then once for each of the job's attempts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


def is_task_gone(error: FarmhandError) -> bool:
    """Whether a runner's call was refused because the task is no longer its own: 404/409
    (canceled, given to another runner, deleted), or 401 (the runner itself is deleted, or
    unknown to a restored database, and the manager has requeued its task already). Work
    on such a task is thrown away, so a worker stops it; the refusal is the farm working
    as it should (a late worker told to stop), not an error of the worker's."""
    return error.status_code in (401, 404, 409)


def is_retryable(error: BaseException) -> bool:
    """Whether waiting and trying again may help (unreachable, 5xx, 429, 503)."""
    if isinstance(error, ManagerUnreachable):
        return True
    if isinstance(error, FarmhandError) and error.status_code is not None:
        return error.status_code >= 500 or error.status_code == 429
    return False
