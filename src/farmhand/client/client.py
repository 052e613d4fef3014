"""The one HTTP client of the manager's REST API (see docs/API.md).

The CLI, the worker agent and the Blender add-on all talk to the manager through this
module, so error handling, authentication and the wire models live in one place. Every
answer is parsed into a model from `farmhand.shared.schemas`; every error answer becomes
a `FarmhandError`, and every transport failure a `ManagerUnreachable`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import ssl
import stat
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from io import BufferedRandom
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote, unquote, urlencode

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from farmhand.client.errors import (
    RUNNER_STATE_HEADER,
    FarmhandError,
    JobTooLarge,
    ManagerUnreachable,
    TilesRefused,
)
from farmhand.shared.blendbounds import BlendTooLarge, check_blend
from farmhand.shared.blendscene import tiles_refusal
from farmhand.shared.filelock import try_lock
from farmhand.shared.hashing import CHUNK_SIZE, iter_file, sha256_file
from farmhand.shared.limits import JOB_BODY_MAX_BYTES
from farmhand.shared.outputnames import OutputName, TemplateError, check_template, extension, render
from farmhand.shared.paths import UnsafePathError, safe_file_name, safe_relative_path
from farmhand.shared.schemas import (
    JOB_PAGE_MAX,
    TASK_PAGE_MAX,
    BlobsMissingRequest,
    BlobsMissingResponse,
    BlobStored,
    BlocklistEntry,
    CompletionOutcome,
    GcResult,
    Health,
    Heartbeat,
    HeartbeatReply,
    JobAccepted,
    JobAction,
    JobActionName,
    JobActionOutcome,
    JobCreate,
    JobDetail,
    JobFile,
    JobPatch,
    JobSettings,
    JobStatus,
    JobSummary,
    OutputStored,
    RunnerAction,
    RunnerActionName,
    RunnerInfo,
    RunnerRegister,
    RunnerRegistered,
    SleepSchedule,
    StorageUsage,
    TaskAction,
    TaskActionName,
    TaskAssignment,
    TaskComplete,
    TaskFail,
    TaskOutcome,
    TaskProgress,
    TaskProgressReply,
    TaskRelease,
    TaskStatus,
    TaskSummary,
    UploadCreate,
    UploadStatus,
    When,
    WorkerCapabilities,
)
from farmhand.shared.timeouts import DATABASE_BUSY_TIMEOUT

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a transfer advances."""

DEFAULT_TIMEOUT = httpx.Timeout(DATABASE_BUSY_TIMEOUT + 30.0, connect=10.0)
"""Longer than a manager may take to answer: its writes wait up to its database's busy
timeout for a lock another process holds, then answer `503` with `Retry-After` (which
callers retry). At 30 s, `farmhand submit` during a 45 s lock said "cannot reach the
manager ... timed out" while the manager would have answered, and a write given up on
may still be carried out once the lock is released. The manager is not made to answer
sooner instead: a wait that ends in success beats a refusal and a retry."""
CREATE_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
"""For `POST /api/jobs`: the manager reads a tiled job's .blend in turn with other uploads
(up to a minute's wait, then up to 30 s: manager/file_reads.py). Given up on sooner, the
job would still be created, and a user sending it again would have two."""
DOWNLOAD_THREADS = 6
"""Files a download of a job's outputs fetches at once, on the client's connection pool:
a frame of a few KB is mostly a round trip, and one at a time 856 frames took 35 s."""
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class Page(Generic[_M]):
    """Items of a paged list (`GET /api/jobs`, a job's tasks) and how many there are in
    all (the manager's `X-Total-Count`)."""

    items: list[_M]
    total: int


def _total_count(response: httpx.Response, seen: int) -> int:
    """The list's `X-Total-Count`; without one (a manager before paging, which answers
    the whole list), the items seen."""
    try:
        return int(response.headers["X-Total-Count"])
    except (KeyError, ValueError):
        return seen


@dataclass(frozen=True)
class JobPoll:
    """A job's state plus how long the manager asks us to wait before asking again."""

    job: JobDetail
    retry_after: float | None


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_detail(response: httpx.Response) -> str:
    """The `detail` of an error body; FastAPI's validation lists become one readable line."""
    try:
        body = response.json()
    except ValueError:
        return _not_json(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                msg = str(item.get("msg", item))
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(body)[:500]


def _not_json(response: httpx.Response) -> str:
    """What to say of an error that is not farmhand's JSON: a web page means something
    else answered at the manager's URL (another server, a proxy's error page), and its
    HTML would fill the terminal or the add-on's one-line report; plain text is kept to
    its first line."""
    content_type = response.headers.get("content-type", "")
    text = response.text.strip()
    if "html" in content_type or text[:15].lower().startswith(("<!doctype", "<html")):
        return (
            f"{response.url.scheme}://{response.url.netloc.decode()} answered with a web "
            "page, not farmhand's API: is the manager URL right, or is a proxy in the way?"
        )
    first = text.splitlines()[0] if text else ""
    return first[:200] or response.reason_phrase or "error"


_DISPOSITION_PARAM = re.compile(
    r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)'
)
"""One `; name=value` of a header (RFC 6266): `value` a token or a quoted string."""
_EXT_VALUE = re.compile(r"^([!#$&+^`{}~0-9A-Za-z-]+)'[^']*'(.*)$")
"""RFC 5987's ext-value: charset, an optional language, the percent-encoded name."""


def attachment_name(disposition: str | None) -> str | None:
    """The file name a `Content-Disposition` header gives, or None if it gives none.

    RFC 6266: `filename*` (RFC 5987 `UTF-8''%E3%82%B7…`, any script) wins over
    `filename` (a token or a quoted string, for clients without `filename*`); a
    `filename*` that cannot be decoded is ignored. The name is not checked here."""
    if not disposition:
        return None
    params: dict[str, str] = {}
    for match in _DISPOSITION_PARAM.finditer(disposition):
        params.setdefault(match.group(1).lower(), match.group(2).strip())
    extended = _EXT_VALUE.match(params.get("filename*", ""))
    if extended is not None:
        charset, encoded = extended.groups()
        try:
            return unquote(encoded, encoding=charset, errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    plain = params.get("filename")
    if plain is None:
        return None
    if plain.startswith('"') and plain.endswith('"') and len(plain) >= 2:
        plain = re.sub(r"\\(.)", r"\1", plain[1:-1])
    return plain or None


def _saved_name(response: httpx.Response, fallback: str) -> str:
    """The name the manager gives a download (`attachment_name`), else `fallback`,
    checked as any file name from the manager is: one name, no folders, nothing
    `safe_file_name` refuses (`..`, `/`, `\\`, a drive, `CON`)."""
    name = attachment_name(response.headers.get("content-disposition")) or fallback
    try:
        return safe_file_name(name)
    except UnsafePathError as exc:
        raise FarmhandError(f"manager sent an unsafe file name: {exc}") from exc


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    deleted = response.headers.get(RUNNER_STATE_HEADER) == "deleted"
    raise FarmhandError(_error_detail(response), response.status_code, runner_deleted=deleted)


def _parse(model: type[_M], response: httpx.Response) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise FarmhandError(
            f"unexpected answer from the manager to {response.request.url.path}: {exc}",
            response.status_code,
        ) from exc


def _parse_list(model: type[_M], response: httpx.Response) -> list[_M]:
    try:
        return TypeAdapter(list[model]).validate_json(response.content)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise FarmhandError(
            f"unexpected answer from the manager to {response.request.url.path}: {exc}",
            response.status_code,
        ) from exc


MAX_JOB_FILES = next(
    rule.max_length
    for rule in JobCreate.model_fields["files"].metadata
    if getattr(rule, "max_length", None) is not None
)
"""How many files a job may have: `JobCreate`'s own rule, read from it."""


def job_body(job: JobCreate) -> bytes:
    """The JSON body `create_job` sends: measured and sent as the same bytes."""
    return json.dumps(
        job.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")
    ).encode()


def check_job_body(body: bytes, files: int) -> None:
    """JobTooLarge if the manager would refuse this job body for its size (413)."""
    if len(body) > JOB_BODY_MAX_BYTES:
        raise JobTooLarge(files, len(body), JOB_BODY_MAX_BYTES, MAX_JOB_FILES)


def check_tiles(blend: Path, settings: JobSettings) -> None:
    """TilesRefused if the manager would refuse, or the worker fail, `settings`' tiles of
    the scene in `blend`: before a byte is packed or sent. A file not readable here (a
    share's path the submitter writes as `{variable}/…`, or one past `check_blend`'s
    bounds, which packing refuses) passes: the manager or the worker says so."""
    if settings.tiles is None:
        return
    try:
        check_blend(blend)
    except BlendTooLarge:
        return
    reason = tiles_refusal(blend, True, blend.name)
    if reason is not None:
        raise TilesRefused(reason)


def _timeout(seconds: float | None) -> dict[str, Any]:
    """A request's `timeout` argument for a limit of `seconds` on everything, connecting
    included (none given: the client's own)."""
    return {} if seconds is None else {"timeout": httpx.Timeout(seconds)}


def _quote_path(path: str) -> str:
    """Quote each segment of a job-relative path for use in a URL, keeping the slashes."""
    return "/".join(quote(part, safe="") for part in path.split("/"))


def tls_context(verify: bool | str) -> bool | ssl.SSLContext:
    """`verify` as httpx wants it: a CA bundle path becomes a context trusting that CA."""
    if not isinstance(verify, str):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ManagerUnreachable(f"cannot use the CA bundle {verify}: {exc}") from exc


def unreachable(base_url: str, exc: httpx.TransportError) -> ManagerUnreachable:
    """The error for a failed connection; an untrusted TLS certificate says what to do."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ManagerUnreachable(
            f"the TLS certificate of the manager at {base_url} is not trusted ({exc}); "
            "if it comes from a private CA, give that CA's PEM file with --ca-bundle "
            "or FARMHAND_CA_BUNDLE"
        )
    return ManagerUnreachable(
        f"cannot reach the manager at {base_url}: {exc or type(exc).__name__}"
    )


class BaseClient:
    """Holds the HTTP connection pool and the bearer token; maps failures to our errors."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "farmhand-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            verify=tls_context(verify),
            transport=transport,
        )
        self._sockets: list[socket.socket] = []
        """The sockets of this client's connections, for `interrupt`."""
        self._sockets_lock = threading.Lock()

    def set_token(self, token: str | None) -> None:
        """Switch the bearer token (a runner gets its secret only after registering)."""
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
        else:
            self._http.headers.pop("Authorization", None)

    def close(self) -> None:
        self._http.close()

    def interrupt(self) -> None:
        """Cut every connection this client has open, from any thread: a request blocked
        writing to or reading from a manager that stopped answering (a 300 s upload
        write) fails at once with `ManagerUnreachable` instead of at its timeout. What
        Ctrl-C needs, as closing a socket does not wake a thread blocked on it (shutting
        it down does). Later requests open new connections."""
        with self._sockets_lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):  # closed meanwhile
                # socket.socket's own, not SSLSocket.shutdown: that one also drops the
                # TLS state under a thread that may be using it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's `trace` extension: keep the socket of each new connection (its TLS
        socket once wrapped) for `interrupt`."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._sockets_lock:
                self._sockets = [s for s in self._sockets if s.fileno() != -1]
                self._sockets.append(sock)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; error statuses raise `FarmhandError`."""
        try:
            response = self._http.request(method, url, extensions={"trace": self._trace}, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        _raise_for_status(response)
        return response

    @contextmanager
    def _stream(
        self, method: str, url: str, *, passing: Collection[int] = (), **kwargs: Any
    ) -> Iterator[httpx.Response]:
        """Like `_request` but the body is read lazily (downloads of big files); an error
        status in `passing` is the caller's to read (its headers), not raised."""
        try:
            with self._http.stream(
                method, url, extensions={"trace": self._trace}, **kwargs
            ) as response:
                if not response.is_success and response.status_code not in passing:
                    response.read()
                    _raise_for_status(response)
                yield response
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc

    def _download(
        self,
        url: str,
        dest: Path,
        on_chunk: Callable[[int], None] | None = None,
        name: str | None = None,
    ) -> Path:
        """Stream `url` into `dest` via a `.part` file, so a cut transfer never looks whole.

        With `name`, `dest` is a folder and the file in it is named as the manager's
        `Content-Disposition` says (`_saved_name`), else `name`."""
        if name is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
        with self._stream("GET", url) as response:
            if name is not None:
                dest.mkdir(parents=True, exist_ok=True)
                dest = dest / _saved_name(response, name)
            partial = dest.with_name(dest.name + ".part")
            with _own_part(partial) as handle:
                try:
                    handle.truncate()
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        handle.write(chunk)
                        if on_chunk is not None:
                            on_chunk(len(chunk))
                    _rename_part(handle, partial, dest)
                except BaseException:
                    partial.unlink(missing_ok=True)  # still ours: the lock is held
                    raise
        return dest

    def _download_resuming(
        self, url: str, dest: Path, sha256: str, on_chunk: Callable[[int], None] | None = None
    ) -> Path:
        """`_download` of a file whose SHA-256 is known (a job's file), which resumes
        from the `.part` an interrupted one left (a dropped connection, Ctrl-C): a cut
        600 MB video is not fetched again from zero.

        The `.part` is kept when the transfer is cut, and continued next time with
        `Range: bytes=<its size>-` and `If-Range: "<sha256>"`: the manager sends the rest
        only if its file is still that one (its ETag is its SHA-256), else the whole
        file, which replaces the part. A part may still hold another file's bytes (one
        that had this path before: a frame rendered again), so a resumed file is
        fetched again whole if it is not `sha256`, its bytes taken back out of the
        progress (a bar at 200% otherwise).

        A part is this download's alone from its first byte to its rename (`_own_part`):
        two `farmhand download`s into one folder at once took each other's growing part
        for a cut-off one, appended to it, and one renamed and reported as done bytes
        that were not the file. Every file, resumed or fetched whole, is hashed as it is
        written and renamed only if it is `sha256`."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        counted = 0

        def count(size: int) -> None:
            nonlocal counted
            counted += size
            if on_chunk is not None:
                on_chunk(size)

        with _own_part(partial) as handle:
            try:
                found, resumed = self._fetch_part(url, handle, sha256, count)
                if found != sha256 and resumed:
                    count(-counted)
                    handle.seek(0)
                    handle.truncate()
                    found, _ = self._fetch_part(url, handle, sha256, count)
            except BaseException:
                handle.flush()
                if not os.fstat(handle.fileno()).st_size:
                    partial.unlink(missing_ok=True)  # nothing to resume from: not kept
                raise
            if found != sha256:
                partial.unlink(missing_ok=True)
                raise FarmhandError(
                    f"{dest}: the bytes received are not the manager's file (SHA-256 "
                    f"{found[:12]}…, expected {sha256[:12]}…); it may have changed while "
                    "downloading: download again"
                )
            _rename_part(handle, partial, dest)
        return dest

    def _download_zip(
        self,
        url: str,
        dest: Path,
        on_chunk: Callable[[int], None] | None = None,
        name: str | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> Path:
        """`_download` of a job's zip, which resumes from the `.part` an interrupted one
        left: a 30 GB outputs.zip cut off at 29 GB is not fetched again from zero.

        A zip has no SHA-256 the client knows in advance, but the manager lays it out
        before sending it and gives it an `ETag` that names its bytes (`zipplan.py`).
        That ETag is kept next to the part (`<zip>.part.etag`, `_PartTag`), and the
        next try asks for `Range: bytes=<the part's size>-` with `If-Range: <it>`: the
        manager sends the rest only if its zip is still that one (no frame rendered
        again, the same template), else the whole zip, which replaces the part.

        With `name`, `dest` is a folder and the zip's name is the manager's
        (`Content-Disposition`), known only from an answer: a first, plain request
        learns it, and is the download itself unless a part of that same zip (by its
        ETag) is there, when it is closed unread and the part resumed.

        A part cut off between its last byte and its rename is as long as the zip: the
        manager answers its resume `416`, with the zip's length (`Content-Range: bytes
        */<size>`) and ETag. If both are the part's, the part is the zip and is renamed
        (and counted done, so a bar ends at 100%), not fetched again: a 30 GB zip was.
        Longer than the zip, or another zip's, it is fetched again whole."""
        report = on_chunk or (lambda size: None)
        if name is not None:
            dest.mkdir(parents=True, exist_ok=True)
            with self._stream("GET", url) as response:
                dest = dest / _saved_name(response, name)
                partial = dest.with_name(dest.name + ".part")
                with _own_part(partial) as handle:
                    tag = _PartTag(partial)
                    kept = handle.seek(0, os.SEEK_END)
                    if not kept or tag.read() != response.headers.get("etag"):
                        _zip_into(response, handle, tag, report, on_size)
                        _rename_part(handle, partial, dest)
                        tag.remove()
                        return dest
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        with _own_part(partial) as handle:
            tag = _PartTag(partial)
            kept, etag = handle.seek(0, os.SEEK_END), tag.read()
            headers = {"Range": f"bytes={kept}-", "If-Range": etag} if kept and etag else {}
            unsatisfiable = httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE
            with self._stream("GET", url, headers=headers, passing={unsatisfiable}) as response:
                again = False
                if response.status_code != unsatisfiable:
                    _zip_into(response, handle, tag, report, on_size)
                elif _is_whole_zip(response, kept, etag):  # cut off before its rename
                    if on_size is not None:
                        on_size(kept)
                    report(kept)
                else:  # longer than the zip, or another zip's
                    again = True
            if again:
                handle.seek(0)
                handle.truncate()
                tag.remove()
                with self._stream("GET", url) as response:
                    _zip_into(response, handle, tag, report, on_size)
            _rename_part(handle, partial, dest)
            tag.remove()
        return dest

    def _fetch_part(
        self, url: str, handle: BufferedRandom, sha256: str, on_chunk: Callable[[int], None]
    ) -> tuple[str, bool]:
        """Fetch `url` into the part `handle`, after the bytes it holds if the manager
        sends the rest of that same file (`_download_resuming`): the SHA-256 of all it
        then holds, and whether its bytes were kept (resumed)."""
        offset = handle.seek(0, os.SEEK_END)
        headers = {"Range": f"bytes={offset}-", "If-Range": f'"{sha256}"'} if offset else {}
        try:
            with self._stream("GET", url, headers=headers) as response:
                resumed = offset > 0 and _range_start(response) == offset
                handle.seek(0)
                if resumed:
                    digest = hashlib.file_digest(handle, "sha256")
                    on_chunk(offset)
                else:
                    digest = hashlib.sha256()
                    handle.truncate()
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    handle.write(chunk)
                    digest.update(chunk)
                    on_chunk(len(chunk))
        except FarmhandError as exc:
            if exc.status_code != httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE:
                raise
            # The part is as long as the file (cut off before its rename), or longer.
            handle.seek(0)
            digest = hashlib.file_digest(handle, "sha256")
            on_chunk(offset)
            return digest.hexdigest(), True
        return digest.hexdigest(), resumed

    def health(self) -> Health:
        """`GET /healthz`: needs no token; used to wait for a manager to come up."""
        return _parse(Health, self._request("GET", "/healthz"))


class FarmhandClient(BaseClient):
    """The people's API: upload files, submit, watch, cancel and download jobs."""

    def missing_blobs(self, hashes: list[str]) -> list[str]:
        """Which of these SHA-256 hashes the manager does not hold yet."""
        body = BlobsMissingRequest(hashes=hashes).model_dump(mode="json")
        response = self._request("POST", "/api/blobs/missing", json=body)
        return _parse(BlobsMissingResponse, response).missing

    def upload_blob(
        self,
        path: Path,
        sha256: str,
        on_progress: ProgressCallback | None = None,
    ) -> BlobStored:
        """Stream one file as a blob; memory use does not grow with the file's size."""
        total = path.stat().st_size
        sent = 0

        def advance(size: int) -> None:
            nonlocal sent
            sent += size
            if on_progress is not None:
                on_progress(sent, total)

        response = self._request(
            "PUT",
            f"/api/blobs/{sha256}",
            content=iter_file(path, advance),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(total)},
        )
        return _parse(BlobStored, response)

    def start_upload(self, sha256: str, size: int) -> UploadStatus:
        """Open (or find again) a resumable upload; its offset says where to send from."""
        body = UploadCreate(sha256=sha256, size=size).model_dump(mode="json")
        return _parse(UploadStatus, self._request("POST", "/api/uploads", json=body))

    def list_uploads(self, timeout: float | None = None) -> list[UploadStatus]:
        """The caller's unfinished resumable uploads (what their quota holds for them)."""
        return _parse_list(UploadStatus, self._request("GET", "/api/uploads", **_timeout(timeout)))

    def abort_upload(self, upload_id: str, timeout: float | None = None) -> None:
        """Abandon an unfinished upload: its bytes, and its place under the quota, go."""
        self._request("DELETE", f"/api/uploads/{quote(upload_id, safe='')}", **_timeout(timeout))

    def release_blob(self, sha256: str, timeout: float | None = None) -> None:
        """Give up a file the caller uploaded that no job of theirs uses: it stops
        counting against their quota (`404` if they uploaded no such file, `409` if a job
        of theirs uses it or it was asked for since)."""
        self._request("DELETE", f"/api/blobs/{quote(sha256, safe='')}", **_timeout(timeout))

    def upload_status(self, upload_id: str) -> UploadStatus:
        return _parse(UploadStatus, self._request("GET", f"/api/uploads/{upload_id}"))

    def send_upload(
        self,
        upload_id: str,
        path: Path,
        offset: int,
        on_chunk: Callable[[int], None] | None = None,
    ) -> UploadStatus:
        """Stream `path` from byte `offset` to its end into a resumable upload."""
        size = path.stat().st_size
        response = self._request(
            "PATCH",
            f"/api/uploads/{upload_id}",
            content=iter_file(path, on_chunk, start=offset),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size - offset),
                "Upload-Offset": str(offset),
            },
            timeout=httpx.Timeout(300.0, connect=10.0),
        )
        return _parse(UploadStatus, response)

    def create_job(self, job: JobCreate) -> JobAccepted:
        """Create a job from blobs already uploaded (JobTooLarge, before sending, if
        the manager would refuse its manifest's size)."""
        body = job_body(job)
        check_job_body(body, len(job.files))
        response = self._request(
            "POST",
            "/api/jobs",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=CREATE_TIMEOUT,
        )
        return _parse(JobAccepted, response)

    def submit_blend(
        self,
        path: Path,
        settings: JobSettings,
        on_progress: ProgressCallback | None = None,
    ) -> JobAccepted:
        """Hash a .blend, upload it only if the manager lacks it, then create the job.

        An unnamed job is named after the file, so `farmhand jobs` stays readable.
        TilesRefused, before anything is hashed or sent, for tiles of a stereo scene.
        """
        check_tiles(path, settings)
        sha = sha256_file(path)
        if sha in self.missing_blobs([sha]):
            self.upload_blob(path, sha, on_progress)
        elif on_progress is not None:
            size = path.stat().st_size
            on_progress(size, size)
        fields = settings.model_dump()
        if not fields["name"]:
            fields["name"] = path.stem
        job = JobCreate(**fields, main_file=path.name, files={path.name: sha})
        return self.create_job(job)

    def list_jobs(
        self, *, status: Collection[JobStatus] = (), owner: str | None = None
    ) -> list[JobSummary]:
        """All jobs visible to this token (in `status`, of `owner`, if given), newest
        first, however many pages that takes."""
        return self.jobs(status=status, owner=owner).items

    def jobs(
        self,
        *,
        status: Collection[JobStatus] = (),
        owner: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Page[JobSummary]:
        """Up to `limit` jobs (None: all) from `offset`, newest first, and how many match.

        The manager answers at most `JOB_PAGE_MAX` a request; more are asked for page
        after page."""
        params: dict[str, Any] = {"status": [s.value for s in status]}
        if owner is not None:
            params["owner"] = owner
        return self._pages(JobSummary, "/api/jobs", params, JOB_PAGE_MAX, limit, offset)

    def job_tasks(
        self,
        job_id: int,
        *,
        status: Collection[TaskStatus] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> Page[TaskSummary]:
        """Up to `limit` of a job's tasks (None: all) from `offset`, in index order, and
        how many match (`status`, if given)."""
        params: dict[str, Any] = {"status": [s.value for s in status]}
        url = f"/api/jobs/{job_id}/tasks"
        return self._pages(TaskSummary, url, params, TASK_PAGE_MAX, limit, offset)

    def _pages(
        self,
        model: type[_M],
        url: str,
        params: dict[str, Any],
        most: int,
        limit: int | None,
        offset: int,
    ) -> Page[_M]:
        """`limit` items (None: all) of a paged list from `offset`, `most` a request."""
        items: list[_M] = []
        total = 0
        while limit is None or len(items) < limit:
            size = most if limit is None else min(most, limit - len(items))
            asked = {**params, "limit": size, "offset": offset + len(items)}
            response = self._request("GET", url, params=asked)
            page = _parse_list(model, response)
            items += page
            total = _total_count(response, offset + len(items))
            if len(page) < size or offset + len(items) >= total:
                break
        return Page(items if limit is None else items[:limit], total)

    def get_job(self, job_id: int, *, tasks: bool = True) -> JobDetail:
        """A job's detail; with `tasks=False` without its tasks (`tasks` is empty), the
        same few KB for a job of 10,000 tasks as for one of ten (`job_tasks` pages them)."""
        return self.poll_job(job_id, tasks=tasks).job

    def list_runners(self) -> list[RunnerInfo]:
        """Every registered worker with what it reported (admin token)."""
        return _parse_list(RunnerInfo, self._request("GET", "/api/admin/runners"))

    def poll_job(self, job_id: int, *, tasks: bool = True) -> JobPoll:
        """A job's detail (with its tasks or not, as `get_job`) and the `Retry-After` the
        manager sent while it is unfinished."""
        params = {} if tasks else {"tasks": "false"}
        response = self._request("GET", f"/api/jobs/{job_id}", params=params)
        retry = parse_retry_after(response.headers.get("Retry-After"))
        return JobPoll(_parse(JobDetail, response), retry)

    def cancel_job(self, job_id: int) -> JobSummary:
        return _parse(JobSummary, self._request("DELETE", f"/api/jobs/{job_id}"))

    def delete_job(self, job_id: int) -> None:
        """Delete a job with its logs and outputs (cancels it first if it runs)."""
        self._request("DELETE", f"/api/jobs/{job_id}", params={"purge": "true"})

    def job_action(self, job_id: int, action: JobActionName) -> JobActionOutcome:
        """Pause, resume, or requeue a job's failed (`requeue-failed`) or all tasks."""
        body = JobAction(action=action).model_dump(mode="json")
        answer = self._request("POST", f"/api/jobs/{job_id}/actions", json=body)
        return _parse(JobActionOutcome, answer)

    def set_priority(self, job_id: int, priority: int) -> JobSummary:
        """A job's priority, 0 to 100; taken into account at the next claim."""
        body = JobPatch(priority=priority).model_dump(mode="json")
        return _parse(JobSummary, self._request("PATCH", f"/api/jobs/{job_id}", json=body))

    def task_action(self, job_id: int, task_id: int, action: TaskActionName) -> JobSummary:
        """Requeue or cancel one task, by its id (not its index in the job)."""
        body = TaskAction(action=action).model_dump(mode="json")
        url = f"/api/jobs/{job_id}/tasks/{task_id}/actions"
        return _parse(JobSummary, self._request("POST", url, json=body))

    def list_files(self, job_id: int) -> list[JobFile]:
        """A job's inputs and outputs."""
        return _parse_list(JobFile, self._request("GET", f"/api/jobs/{job_id}/files"))

    def task_log(self, job_id: int, task_id: int) -> str:
        return self._request("GET", f"/api/jobs/{job_id}/tasks/{task_id}/log").text

    def download_file(
        self,
        job_id: int,
        file_id: int,
        dest: Path,
        on_chunk: Callable[[int], None] | None = None,
        sha256: str | None = None,
    ) -> Path:
        """Stream one file of a job to `dest`. With its `sha256` (the files list's), a
        download cut off before is resumed where it stopped, and what is written checked
        against it (`_download_resuming`)."""
        url = f"/api/jobs/{job_id}/files/{file_id}/download"
        if sha256 is not None:
            return self._download_resuming(url, dest, sha256, on_chunk)
        return self._download(url, dest, on_chunk)

    def download_outputs(
        self,
        job_id: int,
        dest_dir: Path,
        on_progress: ProgressCallback | None = None,
        template: str | None = None,
        kinds: Collection[str] = ("output",),
    ) -> list[Path]:
        """Every file of a job's `kinds` in `dest_dir`, as `fetch_outputs` puts them
        there (a file already there with the same bytes is not fetched again, one with
        other bytes is replaced); their paths, in the order the manager lists them."""
        return self.fetch_outputs(job_id, dest_dir, on_progress, template, kinds).paths

    def fetch_outputs(
        self,
        job_id: int,
        dest_dir: Path,
        on_progress: ProgressCallback | None = None,
        template: str | None = None,
        kinds: Collection[str] = ("output",),
    ) -> OutputsDownload:
        """Stream a job's files of `kinds` to `dest_dir/<its path>`, a frame to the name
        `template` gives it (`{job}/{frame:04d}.{ext}`). By default its frames and
        video; `DOWNLOADED_KINDS` (shared/outputnames.py) adds its compositor passes,
        which keep their paths (named by the template, a pass would take its frame's).

        Downloading again (after an interruption, or once more frames are done) fetches
        only what is not there yet: a file already there with the manager's size and
        SHA-256 (the size compared first, the hash only when it matches) is skipped; one
        with other bytes (edited, or a frame rendered again) is replaced. What was done
        to each is in the answer, for the caller to say. `DOWNLOAD_THREADS` files are
        fetched at once; `on_progress` is called from those threads, one at a time.

        Paths come from the manager, but are still checked: a compromised or buggy
        manager must not make the client write outside `dest_dir`.
        """
        outputs = [f for f in self.list_files(job_id) if f.kind in kinds]
        names = self._output_names(job_id, outputs, template)
        total = sum(f.size for f in outputs)
        done = 0
        counting = threading.Lock()

        def advance(size: int) -> None:
            nonlocal done
            with counting:
                done += size
                if on_progress is not None:
                    on_progress(done, total)

        paths: list[Path] = []
        for output in outputs:
            try:
                relative = safe_relative_path(names.get(output.id, output.path))
            except UnsafePathError as exc:
                raise FarmhandError(f"manager sent an unsafe output path: {exc}") from exc
            paths.append(dest_dir / relative)
        # Files to one path (a template naming two outputs alike) go one after the other,
        # in the manager's order as before, so two threads never write one `.part` file.
        by_path: dict[Path, list[int]] = {}
        for index, path in enumerate(paths):
            by_path.setdefault(path, []).append(index)
        found: list[bool | None] = [None] * len(outputs)
        stop = threading.Event()

        def fetch(indexes: list[int]) -> None:
            for index in indexes:
                if stop.is_set():
                    return
                output, path = outputs[index], paths[index]
                found[index] = there = _holds(path, output)
                if there:
                    advance(output.size)
                else:
                    self.download_file(job_id, output.id, path, advance, output.sha256)

        with ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="download") as pool:
            running = [pool.submit(fetch, indexes) for indexes in by_path.values()]
            try:
                for future in running:
                    future.result()
            except BaseException:
                # The first failure (or Ctrl-C) ends the download at once: nothing more
                # starts, and transfers under way are cut rather than waited for.
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                self.interrupt()
                raise
        report = OutputsDownload(files=outputs, paths=paths)
        report.skipped = [path for path, there in zip(paths, found, strict=True) if there]
        report.replaced = [path for path, there in zip(paths, found, strict=True) if there is False]
        if on_progress is not None and not outputs:
            on_progress(0, 0)
        return report

    def _output_names(
        self, job_id: int, outputs: list[JobFile], template: str | None
    ) -> dict[int, str]:
        """Output id → name by the template (frames only); empty without a template."""
        if template is None:
            return {}
        try:
            check_template(template)
            job_name = self.get_job(job_id).name
            return {
                output.id: render(
                    template,
                    OutputName(
                        job=job_name,
                        job_id=job_id,
                        frame=output.frame,
                        ext=extension(output.path),
                        task=output.task_id or 0,
                    ),
                )
                for output in outputs
                if output.frame is not None and output.kind == "output"
            }
        except TemplateError as exc:
            raise FarmhandError(str(exc)) from exc

    def download_outputs_zip(
        self,
        job_id: int,
        dest: Path,
        on_chunk: Callable[[int], None] | None = None,
        template: str | None = None,
        *,
        into: bool = False,
        on_size: Callable[[int], None] | None = None,
    ) -> Path:
        """Every output of a job as one zip, streamed to `dest`, named by `template`
        (default: the job's own output template, else `frames/0001.png`). `into`:
        `dest` is a folder, and the zip is saved in it under the name the manager gives
        it (`job-7-<the job's name>.zip`); the zip's path is returned either way. A
        download cut off before is resumed where it stopped (`_download_zip`). `on_chunk`
        hears each chunk's bytes (and the kept part's), `on_size` the zip's whole size."""
        url = f"/api/jobs/{job_id}/outputs.zip{_template_query(template)}"
        name = f"job-{job_id}.zip" if into else None
        return self._download_zip(url, dest, on_chunk, name, on_size)

    def download_frame(
        self, job_id: int, frame: int, dest_dir: Path, template: str | None = None
    ) -> Path:
        """One rendered frame into `dest_dir/<its name by the template>`: the manager's
        `X-Output-Name`, percent-encoded UTF-8 beyond printable ASCII (`ショット 10/…`)."""
        url = f"/api/jobs/{job_id}/outputs/{frame}{_template_query(template)}"
        with self._stream("GET", url) as response:
            name = unquote(response.headers.get("x-output-name", f"{frame:04d}"))
        try:
            relative = safe_relative_path(name)
        except UnsafePathError as exc:
            raise FarmhandError(f"manager sent an unsafe output name: {exc}") from exc
        return self._download(url, dest_dir / relative)

    def download_inputs_zip(
        self,
        job_id: int,
        dest: Path,
        *,
        into: bool = False,
        on_chunk: Callable[[int], None] | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> Path:
        """The job's input files (its .blend and assets) as one zip, at `dest` or, with
        `into`, in the folder `dest` under the manager's name for it
        (`job-7-<the job's name>-inputs.zip`); resumed as `download_outputs_zip` is."""
        name = f"job-{job_id}-inputs.zip" if into else None
        return self._download_zip(f"/api/jobs/{job_id}/inputs.zip", dest, on_chunk, name, on_size)

    def submit_shared(self, blend_path: str, settings: JobSettings) -> JobAccepted:
        """A job whose .blend stays on shared storage (the manager maps the path).

        The manager never opens the share's files, so only here can a tiled job of a
        stereo scene be refused before it fails on a worker (`check_tiles`)."""
        check_tiles(Path(blend_path), settings)
        body = {**settings.model_dump(mode="json"), "storage": "shared", "blend_path": blend_path}
        return _parse(JobAccepted, self._request("POST", "/api/jobs", json=body))

    def storage_usage(self) -> StorageUsage:
        """Admins: blob store, disk and per-user usage."""
        return _parse(StorageUsage, self._request("GET", "/api/admin/usage"))

    def collect_garbage(self) -> GcResult:
        """Admins: run garbage collection of unreferenced blobs now."""
        return _parse(GcResult, self._request("POST", "/api/admin/gc"))

    def runner_action(
        self, runner_id: int, action: RunnerActionName, when: When = "after-task"
    ) -> RunnerInfo:
        """Admins: enable, disable or drain a runner; `now` aborts its running task."""
        body = RunnerAction(action=action, when=when).model_dump(mode="json")
        url = f"/api/admin/runners/{runner_id}/actions"
        return _parse(RunnerInfo, self._request("POST", url, json=body))

    def set_sleep_schedule(self, runner_id: int, schedule: SleepSchedule) -> RunnerInfo:
        """Admins: the hours a runner must not render; no windows clears the schedule."""
        url = f"/api/admin/runners/{runner_id}/sleep-schedule"
        return _parse(RunnerInfo, self._request("PUT", url, json=schedule.model_dump(mode="json")))

    def delete_runner(self, runner_id: int) -> None:
        """Admins: forget a runner (its secret stops working; its task is requeued)."""
        self._request("DELETE", f"/api/admin/runners/{runner_id}")

    def list_blocklist(self, job_id: int | None = None) -> list[BlocklistEntry]:
        """Admins: which workers get no more tasks of which jobs (or of `job_id`), and why."""
        params = {} if job_id is None else {"job_id": job_id}
        answer = self._request("GET", "/api/admin/blocklist", params=params)
        return _parse_list(BlocklistEntry, answer)

    def clear_blocklist_entry(self, entry_id: int) -> None:
        """Admins: let a blocklisted worker take that job's tasks again."""
        self._request("DELETE", f"/api/admin/blocklist/{entry_id}")


@dataclass
class OutputsDownload:
    """What `fetch_outputs` did with a job's files."""

    files: list[JobFile]
    """The files of the kinds asked for, as the manager listed them."""
    paths: list[Path] = field(default_factory=list)
    """Where each of `files` now is, in the same order."""
    skipped: list[Path] = field(default_factory=list)
    """Already there with the same bytes: not fetched again."""
    replaced: list[Path] = field(default_factory=list)
    """There with other bytes (edited, or an older render): replaced by the job's."""


def _holds(path: Path, file: JobFile) -> bool | None:
    """Whether `path` holds `file`'s bytes: its size, then (only if that matches) its
    SHA-256; None if there is no file at `path`."""
    try:
        found = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(found.st_mode):
        return False
    return found.st_size == file.size and sha256_file(path) == file.sha256


_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
"""Open a download's part, never what a link in its place points to (POSIX)."""


@contextmanager
def _own_part(partial: Path) -> Iterator[BufferedRandom]:
    """`partial` (a download's `.part`) open to read and write, made if missing, its
    bytes kept, and this download's alone for the block: an exclusive lock
    (`try_lock`) is held on it, so another download of the same file into the same
    folder (a second `farmhand download` at once) can neither append to it nor rename
    it. If another holds it, this file fails with one line.

    The lock is on the open file, not its name: a part that the other download renamed
    (it finished) or removed between this open and this lock is not the part any more,
    and the name is opened again.

    A part that is a symbolic link is not followed: in a shared output folder, whoever
    planted `0001.png.part -> ~/anything` would have the download overwrite that file
    (and rename the link into the frame's place). Nor is one that is not a regular file,
    or a hard link (another name's bytes, say in a backup made with `cp -al`), written
    to."""
    while True:
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise FarmhandError(
                f"{partial} is a symbolic link, not a download's part: not followed "
                "(remove it, then download again)"
            ) from exc
        handle = os.fdopen(fd, "r+b")
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            handle.close()
            raise FarmhandError(f"{partial} is not a file: remove it, then download again")
        if found.st_nlink > 1:  # a hard link: its bytes are another name's too
            handle.close()
            raise FarmhandError(
                f"{partial} is a hard link to another file, not a download's part: not "
                "written (remove it, then download again)"
            )
        if not try_lock(handle.fileno()):
            handle.close()
            raise FarmhandError(
                f"another download is writing {partial}: let it finish (or stop it), "
                "then download again"
            )
        try:
            current = os.path.samestat(os.fstat(handle.fileno()), os.lstat(partial))
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    with handle:
        yield handle


class _PartTag:
    """The ETag of the zip a download's part holds the start of (`_download_zip`), in
    `<part>.etag` next to it; read and written only while the part is held
    (`_own_part`).

    Written as a new file, never through what is there: a link planted in its place (a
    shared folder) is removed, not followed or written through, as for the part."""

    def __init__(self, partial: Path) -> None:
        self.partial = partial
        self.path = partial.with_name(partial.name + ".etag")

    def read(self) -> str | None:
        """The ETag kept, or None (none kept, or not a file of one short line)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _NO_FOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            text = handle.read(1024).decode("ascii", "replace").strip()
        return text if text and "\n" not in text else None

    def write(self, etag: str | None) -> None:
        """Keep `etag` (None: the answer had none, so the part cannot be resumed)."""
        self.remove()
        if etag is None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(etag.encode("ascii", "replace") + b"\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _zip_into(
    response: httpx.Response,
    handle: BufferedRandom,
    tag: _PartTag,
    on_chunk: Callable[[int], None],
    on_size: Callable[[int], None] | None = None,
) -> None:
    """Write a zip's answer into its part `handle`: after the bytes the part holds if the
    answer is the rest of them (a `206` from exactly there), else in their place, the
    answer's ETag kept first (`_PartTag`). Cut off, the part and its tag stay for the
    next try; a part of a zip without an ETag (a manager from before zips had one)
    cannot be resumed, so it goes. Done, the part is as long as the answer said.
    `on_size` hears the whole zip's size, kept bytes included, once the answer says it
    (the zip is laid out before it is sent, so its length is known: a bar can show it)."""
    kept = handle.seek(0, os.SEEK_END)
    if kept and _range_start(response) == kept:
        on_chunk(kept)
    else:
        handle.seek(0)
        handle.truncate()  # before the new tag: a part never holds another zip's bytes
        kept = 0
        tag.write(response.headers.get("etag"))
    resumable = "etag" in response.headers
    length = response.headers.get("content-length")
    if on_size is not None and length is not None and length.isdigit():
        on_size(kept + int(length))
    total = kept
    try:
        for chunk in response.iter_bytes(CHUNK_SIZE):
            handle.write(chunk)
            total += len(chunk)
            on_chunk(len(chunk))
    except BaseException:
        handle.flush()
        if not resumable or not os.fstat(handle.fileno()).st_size:
            tag.partial.unlink(missing_ok=True)  # nothing to resume from (still ours)
            tag.remove()
        raise
    if length is not None and length.isdigit() and total != kept + int(length):
        raise FarmhandError(f"the zip was cut off after {total} bytes: download again to resume")


def _is_whole_zip(refusal: httpx.Response, kept: int, etag: str | None) -> bool:
    """Whether the manager's `416` to the resume of a part of `kept` bytes of the zip
    `etag` says that part is the whole zip: the zip is `kept` bytes long (`Content-Range:
    bytes */<size>`) and still that zip (its ETag)."""
    match = re.fullmatch(r"bytes \*/(\d+)", refusal.headers.get("content-range", "").strip())
    return (
        match is not None
        and kept > 0
        and int(match.group(1)) == kept
        and etag is not None
        and refusal.headers.get("etag") == etag
    )


def _rename_part(handle: BufferedRandom, partial: Path, dest: Path) -> None:
    """Rename a finished part held by `_own_part` to `dest`, while still holding it
    (Windows renames no open file, so there it is closed first)."""
    handle.flush()
    if sys.platform == "win32":
        handle.close()
    os.replace(partial, dest)


def _range_start(response: httpx.Response) -> int | None:
    """Where the part a `206` holds begins (`Content-Range: bytes 100-999/1000`); None
    for any other answer (a `200` is the whole file)."""
    if response.status_code != httpx.codes.PARTIAL_CONTENT:
        return None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def _template_query(template: str | None) -> str:
    return "" if template is None else "?" + urlencode({"template": template})


class RunnerClient(BaseClient):
    """The runners' API, used by the worker agent; authenticated by the runner's secret."""

    def register(
        self, registration_token: str, name: str, capabilities: WorkerCapabilities
    ) -> RunnerRegistered:
        """Trade a registration token for this runner's own secret (sent without auth).

        The secret is also installed as this client's bearer token.
        """
        body = RunnerRegister(token=registration_token, name=name, capabilities=capabilities)
        response = self._request(
            "POST",
            "/api/runner/register",
            json=body.model_dump(mode="json"),
        )
        registered = _parse(RunnerRegistered, response)
        self.set_token(registered.secret)
        return registered

    def heartbeat(
        self,
        current_task_id: int | None = None,
        capabilities: WorkerCapabilities | None = None,
        starting: bool = False,
    ) -> HeartbeatReply:
        body = Heartbeat(
            capabilities=capabilities, current_task_id=current_task_id, starting=starting
        )
        response = self._request("POST", "/api/runner/heartbeat", json=body.model_dump(mode="json"))
        return _parse(HeartbeatReply, response)

    def claim(self, wait: float = 20.0, prefer_job: int | None = None) -> TaskAssignment | None:
        """Long-poll for a task: None when the manager had nothing within `wait` seconds.

        The read timeout is the wait plus a margin, or every idle poll would time out.
        `prefer_job`: at equal priority, a task of this job (whose files we hold) first.
        """
        timeout = httpx.Timeout(wait + 30.0, connect=10.0)
        params: dict[str, float | int] = {"wait": wait}
        if prefer_job is not None:
            params["prefer_job"] = prefer_job
        response = self._request("GET", "/api/runner/tasks", params=params, timeout=timeout)
        if response.status_code == 204:
            return None
        return _parse(TaskAssignment, response)

    def progress(
        self, task_id: int, progress: TaskProgress, timeout: float | None = None
    ) -> TaskProgressReply:
        response = self._request(
            "POST",
            f"/api/runner/tasks/{task_id}/progress",
            json=progress.model_dump(mode="json"),
            **_timeout(timeout),
        )
        return _parse(TaskProgressReply, response)

    def complete(
        self,
        task_id: int,
        frames: list[int],
        log_lines: list[str] | None = None,
        *,
        claim_next: bool = False,
    ) -> CompletionOutcome:
        """Report a task done. `claim_next`: also take the next task now (`next_task`)."""
        body = TaskComplete(frames=frames, log_lines=log_lines or [])
        response = self._request(
            "POST",
            f"/api/runner/tasks/{task_id}/complete",
            json=body.model_dump(mode="json"),
            params={"next": "true"} if claim_next else None,
        )
        return _parse(CompletionOutcome, response)

    def fail(self, task_id: int, reason: str, log_lines: list[str] | None = None) -> TaskOutcome:
        body = TaskFail(reason=reason[:10_000] or "unknown error", log_lines=log_lines or [])
        response = self._request(
            "POST", f"/api/runner/tasks/{task_id}/fail", json=body.model_dump(mode="json")
        )
        return _parse(TaskOutcome, response)

    def release(self, task_id: int, reason: str = "worker shutting down") -> TaskOutcome:
        body = TaskRelease(reason=reason[:1000])
        response = self._request(
            "POST", f"/api/runner/tasks/{task_id}/release", json=body.model_dump(mode="json")
        )
        return _parse(TaskOutcome, response)

    def download_input(
        self,
        job_id: int,
        path: str,
        dest: Path,
        on_chunk: Callable[[int], None] | None = None,
        kind: str = "input",
    ) -> Path:
        """Stream one input file (or, `kind="output"`, a rendered frame) of a job this
        runner holds a task of."""
        url = f"/api/runner/files/{job_id}/{_quote_path(path)}"
        return self._download(url if kind == "input" else f"{url}?kind={kind}", dest, on_chunk)

    def upload_video(self, job_id: int, task_id: int, path: Path) -> OutputStored:
        """Send the video a video task made as the raw body, streamed from disk (`job_id`
        is the task's, which the manager knows)."""
        return self._put_file(f"/api/runner/tasks/{task_id}/video", path)

    def upload_tile(self, job_id: int, task_id: int, path: Path) -> OutputStored:
        """Send the tile a tile task rendered (a PNG, or an EXR for a still in OpenEXR) as
        the raw body, streamed from disk (the manager writes it once; `job_id` is the
        task's, which the manager knows)."""
        extension = path.suffix.lower().lstrip(".")
        return self._put_file(f"/api/runner/tasks/{task_id}/tile.{quote(extension, safe='')}", path)

    def upload_output(self, job_id: int, task_id: int, frame: int, path: Path) -> OutputStored:
        """Send one rendered frame as the raw body, streamed from disk (the manager writes
        it once; `job_id` is the task's, which the manager knows)."""
        return self._put_file(
            f"/api/runner/tasks/{task_id}/frames/{frame}{path.suffix.lower()}", path
        )

    def _put_file(self, url: str, path: Path) -> OutputStored:
        """PUT a file as the raw body, streamed from disk."""
        response = self._request(
            "PUT",
            url,
            content=iter_file(path),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
        )
        return _parse(OutputStored, response)

    def upload_extra(
        self, job_id: int, task_id: int, frame: int, kind: str, name: str, path: Path
    ) -> OutputStored:
        """Send a file that goes with a frame as the raw body, streamed from disk (a pass
        can be a big multilayer EXR, which the manager then writes once): `preview`
        (Blender's JPEG of it) or `pass` (a compositor File Output node's file, stored
        under `name`). The extension of `name` (else of the file) says which image
        format it is. `job_id` is the task's, which the manager knows."""
        return self._put_file(
            f"/api/runner/tasks/{task_id}/frames/{frame}/{quote(kind, safe='')}/"
            f"{_quote_path(name or path.name)}",
            path,
        )

    def sign_off(self) -> None:
        """Tell the manager this runner is going away, so its task is requeued now."""
        self._request("POST", "/api/runner/sign-off")
