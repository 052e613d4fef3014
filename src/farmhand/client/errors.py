"""Errors raised by the HTTP client.

Callers (CLI, worker, add-on) must tell "the manager said no" apart from "the manager
could not be reached": the first is shown to a person or fails a task, the second is
retried because a manager restart must not lose work.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit


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


Cause = Literal["answered", "not_https", "bad_url", "dns", "silent"]
"""Why a call to the manager failed, as a person is told (`unreachable_cause`)."""

_NOT_HTTPS = ("WRONG_VERSION_NUMBER", "record layer failure", "http request")
"""What the TLS library says when an https:// URL meets a plain-HTTP server (OpenSSL 3,
its 3.2+ wording, and LibreSSL's)."""
_BAD_URL = ("missing an 'http://' or 'https://' protocol", "unsupported protocol")
"""httpx's words for a URL it cannot send to at all."""
_NO_SUCH_HOST = (
    "Name or service not known",
    "nodename nor servname",
    "No address associated with hostname",
    "Temporary failure in name resolution",
    "getaddrinfo failed",
)
"""A host name DNS does not know (glibc, macOS, Windows; a resolver that is down)."""


def unreachable_cause(error: BaseException) -> Cause:
    """Why this call failed: `answered` (the manager answered, with an error), or why it
    did not: `not_https` (an https:// URL for a plain-HTTP manager), `bad_url` (no
    http(s):// in it), `dns` (its host name is not known) or `silent` (refused, timed
    out, cut off). The first two fail the same way however often they are tried; a
    manager that is down gave the artist "uploading 0%" for two minutes of retries."""
    if not isinstance(error, ManagerUnreachable):
        return "answered"
    text = str(error)
    if any(words in text for words in _BAD_URL):
        return "bad_url"
    if any(words in text for words in _NOT_HTTPS):
        return "not_https"
    if any(words in text for words in _NO_SUCH_HOST):
        return "dns"
    return "silent"


def url_problem(url: str) -> str | None:
    """What is wrong with a manager URL no request could be sent to (None if nothing):
    refused before a submit packs a byte, since `render-manager:8080` was retried for
    two minutes as if the manager were down."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return "it must start with http:// or https://, e.g. http://render-manager:8080"
    if not parts.hostname:
        return "it names no host, e.g. http://render-manager:8080"
    return None


def unreachable_words(error: BaseException, url: str) -> str:
    """One line saying, for a person, why the manager at `url` gave no good answer."""
    cause = unreachable_cause(error)
    if cause == "not_https":
        plain = "http://" + url.split("://", 1)[-1]
        return f"the manager at {url} does not speak https (try {plain})"
    if cause == "bad_url":
        return f"the manager URL {url} {url_problem(url) or 'cannot be used'}"
    if cause == "dns":
        host = urlsplit(url).hostname or url
        return f"the manager's host name {host} is not known (DNS)"
    if cause == "answered":
        return f"the manager at {url} answers with an error ({error})"
    return f"the manager at {url} does not answer"


def is_retryable(error: BaseException) -> bool:
    """Whether waiting and trying again may help (unreachable, 5xx, 429, 503); not for a
    URL that can never work (`unreachable_cause`: `not_https`, `bad_url`)."""
    if isinstance(error, ManagerUnreachable):
        return unreachable_cause(error) not in ("not_https", "bad_url")
    if isinstance(error, FarmhandError) and error.status_code is not None:
        return error.status_code >= 500 or error.status_code == 429
    return False
