"""Request limits, in one place: body sizes and JSON depth.

Every request passes `LimitsMiddleware` before any route reads a byte, so an oversized
body is refused from its `Content-Length` without being received, and a body that
lies about its length (or is chunked) is cut off as soon as it passes the limit.
Uploads (multipart, octet-stream) may be as large as `max_upload_bytes`; a job's
manifest (`MANIFEST_ROUTES`) `JOB_BODY_MAX_BYTES`, room for as many files as a job may
have; every other body (JSON) only `max_body_bytes`, because it is parsed in memory.

A JSON body is also checked for nesting depth before it reaches a parser: Python's
`json` recurses per level, so `[[[[…]]]]` a few thousand deep would otherwise become a
RecursionError (a 500) somewhere inside FastAPI. Every JSON body but a manifest is read
and checked here, before the route knows who sent it, which is why they are small. A
manifest is up to 32 MiB, and reading and scanning that for anyone who connects let six
anonymous connections stop the event loop (and every runner's heartbeat) for half a
minute and hold their bodies' memory: its route reads it once the caller is known
(`manifest_body`), with the scan in a thread. A body cut off by its client is never
scanned.

The other bodies' scan leaves the event loop too, when it is needed at all: counting a
body's brackets (in C) decides almost every body at once, a runner's always; one with
more brackets than the depth limit is scanned in a thread of its own (`check_json_aside`),
one at a time. A Python loop over a megabyte of `[]` takes a few tenths of a second, and
on the event loop a few anonymous clients sending such bodies in a loop stopped every
runner's heartbeat and claim for seconds. One at a time, and not in the thread pool the
routes share, so a crowd of such bodies neither takes every thread from the routes nor
shares out the interpreter's lock (the GIL) among as many scans: they wait their turn,
and only they do.

A body that stops arriving is cut off too: no bytes for `client_timeout` seconds while
a route waits for more is a `408` (`BodyTimeout`), which ends the request like any error
(a partial upload's temporary file is removed, a resumable upload's lock released) and
closes the connection. It is an idle timeout, so a big upload may take as long as it
needs while it keeps moving. (A request's head has its own deadline, in the server's
protocol: `farmhand.manager.connections`.)

An upload whose client goes away before its last byte is `BodyInterrupted`, raised here
for every route: the routes that read their body themselves catch it as the
`ClientDisconnect` it is (`uploads.receiving`, naming who sent it); for those whose form
FastAPI parses before the route runs, `answer_interrupted` logs it the same way and
answers the same `499`, where FastAPI would make it a `400` nobody logged.

The per-user storage quota is a different kind of limit (it needs the database) and
lives in `farmhand.manager.storage.usage`; its 413 is raised by the upload routes
(`enforce_quota`, which also counts the caller's unfinished resumable uploads), as is
the 409 for a user with `max_open_uploads` unfinished uploads (`enforce_open_uploads`).
The routes that read their multipart form themselves (`form_file.FormFile`) also refuse
an upload the quota cannot take before it is received: by its declared length
(`refuse_hopeless_upload`), else as it streams in (`within_allowance`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from functools import partial

from anyio import CapacityLimiter, to_thread
from fastapi.exception_handlers import http_exception_handler
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farmhand.manager.api.deps import Caller
from farmhand.manager.api.uploads import upload_interrupted
from farmhand.manager.context import ManagerContext
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage.usage import (
    largest_counted_blob,
    unused_upload_bytes,
    usage_with,
    user_usage_bytes,
)
from farmhand.shared.limits import JOB_BODY_MAX_BYTES

MULTIPART_SLACK = 1024**2
"""Room for multipart framing around an upload of exactly `max_upload_bytes`."""
RAW_UPLOADS = (("PUT", "/api/blobs/"), ("PATCH", "/api/uploads/"), ("PUT", "/api/runner/tasks/"))
"""Routes that take raw bytes, whatever Content-Type a client sends (or none)."""
MANIFEST_ROUTES = frozenset({("POST", "/api/jobs"), ("POST", "/api/blobs/missing")})
"""JSON routes that carry a whole job's manifest: their body may be `JOB_BODY_MAX_BYTES`
(`farmhand.shared.limits`, where clients read it too) instead of `max_body_bytes`."""
MANIFEST = "the job's manifest"
CHECKED_JSON = "the request body"
"""What `for_request` calls a body read whole and checked for JSON depth here, before
its route (a manifest's route reads and checks its own: `manifest_body`)."""
_JSON_SYNTAX = re.compile(rb'[\[\]{}"\\]')


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, what: str) -> None:
        super().__init__(
            413, f"{what} is larger than this manager's limit of {limit} bytes ({_human(limit)})"
        )


class JsonTooDeep(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(400, f"the JSON body nests deeper than {limit} levels")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"the request body stopped arriving: nothing for {seconds:g} s",
            # The rest of the body may still come: the connection cannot carry another
            # request.
            headers={"Connection": "close"},
        )


class BodyInterrupted(ClientDisconnect, HTTPException):
    """The client went away after `read` bytes of its upload's body.

    A `ClientDisconnect`, for the routes that catch it while they read the body; an
    `HTTPException`, which FastAPI lets through its form parsing untouched (anything else
    it turns into a `400`), for `answer_interrupted`."""

    def __init__(self, read: int) -> None:
        HTTPException.__init__(self, 499, "the client went away during its upload")
        self.read = read


async def answer_interrupted(request: Request, error: Exception) -> Response:
    """The app's handler of a `BodyInterrupted` no route caught: an upload cut off while
    FastAPI parsed its form, before the route (or who sent it) was known. Logged and
    answered as the routes that catch it do (`uploads.upload_interrupted`)."""
    read = error.read if isinstance(error, BodyInterrupted) else 0
    return await http_exception_handler(request, upload_interrupted(request, read))


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class BodyLimits:
    max_body_bytes: int
    max_upload_bytes: int
    max_json_depth: int
    idle_timeout: float | None = None
    """Seconds a body may stop arriving before it is cut off (`BodyTimeout`)."""

    @classmethod
    def from_settings(cls, settings: ManagerSettings) -> BodyLimits:
        return cls(
            settings.max_body_bytes,
            settings.max_upload_bytes,
            settings.max_json_depth,
            settings.client_timeout,
        )

    def for_request(self, method: str, path: str, content_type: str) -> tuple[int, str]:
        """The byte limit of this request's body, and what to call it in the 413."""
        kind = _kind(content_type)
        if kind == "multipart/form-data":
            return self.max_upload_bytes + MULTIPART_SLACK, "the upload"
        if kind == "application/octet-stream" or any(
            method == verb and path.startswith(prefix) for verb, prefix in RAW_UPLOADS
        ):
            return self.max_upload_bytes, "the upload"
        if (method, path.rstrip("/")) in MANIFEST_ROUTES:
            return max(self.max_body_bytes, JOB_BODY_MAX_BYTES), MANIFEST
        return self.max_body_bytes, "the request body"


def _kind(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def json_depth(body: bytes, stop_above: int | None = None) -> int:
    """How deeply a JSON text nests (brackets inside strings do not count); once past
    `stop_above`, the depth reached so far (the answer is then "too deep" anyway).

    A linear scan without parsing: it must be safe on exactly the input that would
    make a recursive parser fail.
    """
    depth = deepest = 0
    in_string = False
    skip = -1
    for match in _JSON_SYNTAX.finditer(body):
        position, char = match.start(), match.group()
        if position == skip:
            continue  # the byte after a backslash is escaped, whatever it is
        if in_string:
            if char == b"\\":
                skip = position + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


def few_brackets(body: bytes, max_depth: int) -> bool:
    """Whether a body has too few brackets to nest deeper than `max_depth`: JSON cannot
    nest deeper than it has brackets, and counting them (in C) spares almost every body
    the scan, every runner call's among them."""
    return body.count(b"[") + body.count(b"{") <= max_depth


def check_json(body: bytes, max_depth: int) -> None:
    """`JsonTooDeep` if the body nests deeper than `max_depth`. Its scan, when needed,
    takes tenths of a second a megabyte, in the caller's thread: a body from anyone is
    checked with `check_json_aside` instead, off the event loop."""
    if few_brackets(body, max_depth):
        return
    if json_depth(body, stop_above=max_depth) > max_depth:
        raise JsonTooDeep(max_depth)


async def check_json_aside(body: bytes, max_depth: int, scans: CapacityLimiter) -> None:
    """`check_json` for a body from anyone, before anyone knows who sent it: a body that
    `few_brackets` does not decide is scanned in a thread, holding `scans` (one scan at a
    time, whoever sent how many) and none of the routes' threads. On the event loop, a
    megabyte of `[]` held it for a few tenths of a second, every runner's heartbeat
    with it."""
    if not few_brackets(body, max_depth):
        await to_thread.run_sync(check_json, body, max_depth, limiter=scans)


async def manifest_body(request: Request, max_depth: int) -> bytes:
    """The JSON body of a `MANIFEST_ROUTES` request, read by its route after the caller
    was authenticated (the middleware only bounds its size and its pauses), and checked
    for depth in a thread: scanning 32 MiB of brackets takes seconds."""
    body = await request.body()
    await run_in_threadpool(check_json, body, max_depth)
    return body


def declared_length(scope: Scope) -> int | None:
    """The body length a request announces (`Content-Length`), None if it names none."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _chunked(scope: Scope) -> bool:
    """Whether a request's body comes in chunks (`Transfer-Encoding`), of no stated length."""
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return ""


class LimitsMiddleware:
    """Bound every HTTP request body (size, JSON depth, and how long it may stall) before
    a route sees it."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits
        self.scans = CapacityLimiter(1)
        """Deep-looking bodies are scanned one at a time (`check_json_aside`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = _content_type(scope)
        limit, what = self.limits.for_request(scope["method"], scope["path"], content_type)
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, BodyTooLarge(limit, what))
            return
        started = False
        body_left = (declared or 0) > 0 or _chunked(scope)

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if body_left:
                    # Answered before its body was read (a 401 to a manifest sent with
                    # no token): the rest would keep the connection for as long as the
                    # client cares to hold it, so it closes once this answer is sent.
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        def interrupted(read: int) -> None:
            if not started:  # else its answer is under way: nothing to tell anyone
                raise BodyInterrupted(read)

        bounded = watched_body(
            receive,
            limit,
            what,
            self.limits.idle_timeout,
            # Bodies a route reads itself: one cut off is a logged 499, not a traceback.
            interrupted=interrupted if what in ("the upload", MANIFEST) else None,
        )

        async def watched() -> Message:
            nonlocal body_left
            message = await bounded()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_left = False
            return message

        try:
            kind = _kind(content_type)
            if what == CHECKED_JSON and (not kind or "json" in kind):
                # FastAPI parses a body without a Content-Type as JSON too.
                try:
                    body = await read_all_body(watched, limit, what)
                except ClientDisconnect:
                    return  # nobody to answer; the body is not checked, nor kept
                await check_json_aside(body, self.limits.max_json_depth, self.scans)
                await self.app(scope, replay_body(body, watched), watch_send)
            else:
                await self.app(scope, watched, watch_send)
        except (BodyTooLarge, JsonTooDeep, BodyTimeout) as error:
            if started:
                raise
            await _refuse(send, error)


async def read_all_body(receive: Receive, limit: int, what: str) -> bytes:
    """The whole body, raising `BodyTooLarge` as soon as it passes `limit` bytes and
    `ClientDisconnect` if its client went away before its end (nobody waits for an
    answer, and a partial body is not worth checking)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, what)
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def watched_body(
    receive: Receive,
    limit: int,
    what: str,
    idle_timeout: float | None,
    *,
    interrupted: Callable[[int], None] | None = None,
) -> Receive:
    """`receive`, raising `BodyTooLarge` once the body passes `limit` bytes and
    `BodyTimeout` when the next part of it does not come within `idle_timeout` seconds;
    `interrupted` is called with the bytes received if the client goes away before the
    last one (it may raise).

    Only while the body is unfinished: once it is complete (or the client is gone), a
    `receive` is an app waiting for the client to disconnect (a live stream does, for as
    long as it runs), which no timeout may cut short."""
    size = 0
    complete = False

    async def watched() -> Message:
        nonlocal size, complete
        if complete or idle_timeout is None:
            message = await receive()
        else:
            try:
                async with asyncio.timeout(idle_timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(idle_timeout) from None
        if message["type"] != "http.request":
            cut_off, complete = not complete, True
            if cut_off and interrupted is not None:
                interrupted(size)
            return message
        size += len(message.get("body", b""))
        if size > limit:
            raise BodyTooLarge(limit, what)
        if not message.get("more_body", False):
            complete = True
        return message

    return watched


async def _refuse(send: Send, error: HTTPException) -> None:
    body = json.dumps({"detail": error.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def enforce_quota(
    context: ManagerContext,
    caller: Caller,
    sha256s: Collection[str],
    extra_bytes: int = 0,
    *,
    submitting: bool = False,
    at_least: bool = False,
) -> None:
    """413 if the caller's jobs referencing these blobs would pass their storage quota.

    `extra_bytes` counts bytes not stored yet (an upload announced by its length), so a
    hopeless upload is refused before it is received. The caller's unfinished resumable
    uploads count by the size each announced (known from the start, so sending all but
    the last byte reserves as much as sending them all). Admins have no quota: they run
    the farm and clean it up. `submitting`: the refused request is a job's submission,
    which the 413's advice must not offer as the way out (`QuotaExceeded`). `at_least`:
    `extra_bytes` is what is known of an upload so far (its bytes received before it was
    stopped, its declared length less the form's framing), not its size, and the 413
    says so: "at least" that much, not a figure a user takes for their file's size.
    """
    quota = _quota_of(context, caller)
    if quota is None:
        return
    uploads, reserved = _unfinished(context, caller)
    with context.db.read() as session:
        usage = usage_with(session, caller.user_id, sha256s) + extra_bytes + reserved
        current = user_usage_bytes(session, caller.user_id) + reserved
        unused = unused_upload_bytes(session, caller.user_id) if usage > quota else 0
    if usage > quota:
        raise QuotaExceeded(
            current,
            usage,
            quota,
            uploads,
            reserved,
            unused=unused,
            grace_seconds=context.settings.blob_grace_seconds,
            submitting=submitting,
            at_least=at_least,
        )


def quota_room(context: ManagerContext, caller: Caller) -> int | None:
    """The bytes of new files `enforce_quota` lets the caller add now (negative when they
    are over their quota already): it refuses `extra_bytes` exactly when they are more.
    None when it refuses nothing (no quota, an admin). For an upload of a size known only
    at its end, to stop reading it at the byte that passes (`upload_allowance`)."""
    quota = _quota_of(context, caller)
    if quota is None:
        return None
    _, reserved = _unfinished(context, caller)
    with context.db.read() as session:
        return quota - usage_with(session, caller.user_id, ()) - reserved


def upload_allowance(context: ManagerContext, caller: Caller) -> int | None:
    """The most bytes the caller's upload may have before its content is known (None:
    no limit but the upload limit). The room under their quota (`quota_room`), or, if
    there is room at all, the size of the largest file their usage counts already, if
    larger: the upload may be that file (the same .blend chosen again), which costs
    nothing more. Its hash, known at its end, tells (the route's own `enforce_quota`)."""
    room = quota_room(context, caller)
    if room is None or room < 0:
        return room
    with context.db.read() as session:
        return max(room, largest_counted_blob(session, caller.user_id))


def refuse_hopeless_upload(
    context: ManagerContext, caller: Caller, declared: int | None, *, submitting: bool = False
) -> None:
    """413 (`QuotaExceeded`, the quota's own answer; `submitting` as for `enforce_quota`)
    before a byte of a multipart body is read if its declared length leaves no room for
    its file, whatever the file is (`upload_allowance`). The file is at most the body,
    and at least the body without its framing (`MULTIPART_SLACK`, which also covers the
    form's few small text fields: `form_file.MAX_TEXT_FIELDS`). A route that reads its
    form itself (`form_file.FormFile`) calls this first; with no declared length
    (chunked), `within_allowance` stops the body instead."""
    if declared is None:
        return
    least = max(0, declared - MULTIPART_SLACK)
    allowed = upload_allowance(context, caller)
    if allowed is not None and least > allowed:
        enforce_quota(context, caller, (), least, submitting=submitting, at_least=True)


async def within_allowance(
    context: ManagerContext,
    caller: Caller,
    chunks: AsyncIterator[bytes],
    *,
    submitting: bool = False,
) -> AsyncIterator[bytes]:
    """`chunks` (an upload's bytes as they arrive), stopped with the quota's 413 as soon
    as they pass `upload_allowance`: a body of no declared length (chunked), or one whose
    framing left a doubt, is not received further, and the blob store discards what it
    wrote of it. The figures are the quota's (`enforce_quota` with the bytes received so
    far); if it lets them pass (another upload freed room meanwhile), the allowance is
    asked again."""
    allowed = await run_in_threadpool(upload_allowance, context, caller)
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if allowed is not None and size > allowed:
            await run_in_threadpool(
                partial(enforce_quota, submitting=submitting, at_least=True),
                context,
                caller,
                (),
                size,
            )
            allowed = await run_in_threadpool(upload_allowance, context, caller)
        yield chunk


def _quota_of(context: ManagerContext, caller: Caller) -> int | None:
    """The caller's quota; None for none. Admins have no quota: they run the farm and
    clean it up."""
    quota = context.settings.user_quota_bytes
    return None if quota is None or caller.is_admin else quota


def _unfinished(context: ManagerContext, caller: Caller) -> tuple[int, int]:
    """The caller's unfinished resumable uploads: how many, and the bytes they announced
    (which the quota holds for them)."""
    uploads = context.blobs.partials.open_uploads(caller.user_id)
    return len(uploads), sum(upload.session.size for upload in uploads)


def enforce_open_uploads(context: ManagerContext, caller: Caller, open_uploads: int) -> None:
    """409 if the caller may not open another resumable upload: they have
    `max_open_uploads` unfinished already. Admins have no limit, as no quota."""
    limit = context.settings.max_open_uploads
    if limit and open_uploads >= limit and not caller.is_admin:
        raise TooManyUploads(open_uploads, limit, context.settings.blob_retention_days)


ABORT_HINT = (
    "farmhand uploads list shows yours, farmhand uploads abort --all aborts them; "
    "GET /api/uploads, DELETE /api/uploads/{id}"
)
"""How to see and abort one's unfinished uploads, said where they refuse a request: the
CLI's way first (the add-on shows this to an artist, who has no REST client), then the
API's."""


class QuotaExceeded(HTTPException):
    """The 413 names what the usage is made of and what frees each part: deleting jobs
    frees their files, aborting frees unfinished uploads, and files uploaded that no job
    uses go on their own after the grace period (or when their uploader releases them), or stop
    being extra once the job using them is submitted (`storage/usage.py`). That last
    way out is offered only for an upload, which waits for its job: when the refused
    request is the submission (`submitting`), saying "submit the job" goes in a circle,
    and an admin's larger quota is named instead (QA round 10). When what is sent is more
    than the whole quota by itself, nothing freed would make room: the answer says so,
    and offers none of those ways out (QA round 13: a 255 MiB .blend for a 781 KiB quota
    was told to wait for the removal of 473 KiB)."""

    def __init__(
        self,
        current: int,
        usage: int,
        quota: int,
        uploads: int = 0,
        reserved: int = 0,
        *,
        unused: int = 0,
        grace_seconds: float = 0,
        submitting: bool = False,
        at_least: bool = False,
    ) -> None:
        parts, remedies = [], []
        if current - reserved - unused > 0:
            remedies.append("delete old jobs")
        if unused:
            parts.append(
                f"{_human(unused)} of it by files you uploaded that no job uses (they count "
                "as a job's once one uses them; otherwise they are removed about "
                f"{_duration(grace_seconds)} after you last uploaded them)"
            )
            remedies.append(
                "wait for their removal"
                if submitting
                else "submit the job using them or wait for their removal"
            )
        if uploads:
            parts.append(
                f"{_human(reserved)} of it by {uploads} unfinished "
                f"upload{'' if uploads == 1 else 's'} ({ABORT_HINT})"
            )
            remedies.append("abort unfinished uploads")
        if submitting:
            remedies.append("ask an admin for a larger quota")
        after, limit = _human(usage), _human(quota)
        if after == limit:  # just over: rounded alike, the figures would say "at" it
            after, limit = f"{usage:,} bytes", f"{quota:,} bytes"
        held = "".join(f"; {part}" if n else f", {part}" for n, part in enumerate(parts))
        if usage - current > quota:  # it would not fit an empty quota: nothing frees room
            advice = "what you send is more than your whole quota: ask an admin for a larger quota"
        elif remedies:
            advice = " or ".join(remedies) + " to make room"
        else:
            advice = "what you send is more than your quota"
        super().__init__(
            413,
            f"storage quota exceeded: this would bring your usage to "
            f"{'at least ' if at_least else ''}{after} "
            f"of your {limit} quota (now {_human(current)}{held}); {advice}",
        )


def _duration(seconds: float) -> str:
    """`3600` as "1 hour", `90` as "90 seconds": the grace period as people say it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


class TooManyUploads(HTTPException):
    def __init__(self, uploads: int, limit: int, retention_days: float) -> None:
        super().__init__(
            409,
            f"you have {uploads} unfinished uploads, this manager's limit per user "
            f"(max_open_uploads = {limit}): finish or abort one before starting another "
            f"({ABORT_HINT}); an upload that gets no bytes for {retention_days:g} days "
            "is removed on its own",
        )
