"""`GET /api/events`: live changes as Server-Sent Events, for the web UI and scripts.

Each event names what changed (`job 7`, `task 12 of job 7`, `runner 3`, `output 40 of
job 7`); the page then fetches the JSON it shows. Only what the caller may see is sent:
job, task and output events for their own jobs (all jobs for an admin), runner events
to admins only. A comment line every `HEARTBEAT_SECONDS` keeps proxies from closing an
idle stream and lets the browser notice a dead one; `EventSource` reconnects by itself
(after the `retry:` delay sent first), and the page refetches on every (re)connect, so
events missed while disconnected cost nothing.

The caller's credentials are checked again while the stream is open (`signed_in`),
at most every `RECHECK_SECONDS`: a stream opened before its user signed out, was
disabled, or had the token it was opened with revoked ends within that time and
delivers nothing more, and the browser's reconnect then gets 401 and the login page.
Without it, a shared worker keeping one stream open across tabs would go on showing a
signed-out user's events after another user signs in.

A stream that fails once begun (the process out of file descriptors when it checks the
caller again, say) ends cleanly, as any stream ends, with one log line
(`api/errors.py`'s for a storage fault, a traceback for a bug): its answer has begun,
and there is no error answer left to give.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Caller, Context, Credentials, UserDep, current_user
from farmhand.manager.api.errors import refused_for_storage
from farmhand.manager.api.streaming import ClosingStreamingResponse
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job
from farmhand.manager.db.presence import unavailable
from farmhand.manager.events import FarmEvent
from farmhand.shared.schemas import ErrorResponse
from farmhand.shared.web_schemas import LiveEvent

router = APIRouter(prefix="/api", tags=["events"])
log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 15.0
RETRY_MILLISECONDS = 2000
POLL_SECONDS = 1.0
"""How often an idle stream checks whether the server is shutting down."""
RECHECK_SECONDS = 2.0
"""How stale the check that the caller is still signed in may be before an event is
sent: one read per open stream this often, not one per event under load."""

_DOC = (
    "`text/event-stream`. Each event has `event: job|task|runner|output` and "
    "`data:` a JSON `LiveEvent`; lines starting with `:` are heartbeats."
)


def server_exiting() -> bool:
    """True once Uvicorn has been asked to stop.

    Uvicorn waits for open responses before it stops, and a live stream never ends on
    its own, so without this a manager with a browser tab open would not stop on
    SIGTERM. Uvicorn installs its `Server.handle_exit` as the SIGTERM handler; its
    `should_exit` flag is the only outside sign of a shutdown (the lifespan shutdown
    runs after the streams are gone).
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


class Visibility:
    """Which events one caller may see; owners of jobs are looked up once each."""

    def __init__(self, context: ManagerContext, caller: Caller) -> None:
        self.context = context
        self.caller = caller
        self.owners: dict[int, int | None] = {}

    def _owner(self, job_id: int) -> int | None:
        # A snapshot, not a write transaction: a stream must not wait for (nor queue
        # with) a long write to learn whose job it is. Events are published after their
        # commit, so the snapshot already holds a job its event announces.
        with self.context.db.read() as session:
            job = session.get(Job, job_id)
            return job.owner_id if job is not None else None

    async def allows(self, event: FarmEvent) -> bool:
        if event.kind == "runner":
            return self.caller.is_admin
        if self.caller.is_admin:
            return True
        if event.job_id is None:
            return False
        if event.job_id not in self.owners:
            try:
                self.owners[event.job_id] = await run_in_threadpool(self._owner, event.job_id)
            except Exception as error:
                if not unavailable(error):
                    raise
                # The database is away (an outage the reaper logs once): this event is
                # not shown, and the stream stays open rather than dying with a traceback.
                return False
        return self.owners[event.job_id] == self.caller.user_id


def format_event(event: FarmEvent) -> str:
    data = LiveEvent(kind=event.kind, id=event.id, job_id=event.job_id).model_dump_json()
    return f"event: {event.kind}\ndata: {data}\n\n"


class Recheck:
    """Whether the stream's caller still holds the credentials it was opened with,
    asked again once `RECHECK_SECONDS` have passed since the last answer."""

    def __init__(self, signed_in: Callable[[], bool]) -> None:
        self.signed_in = signed_in
        self.checked = time.monotonic()

    async def still_valid(self) -> bool:
        if time.monotonic() - self.checked < RECHECK_SECONDS:
            return True
        try:
            valid = await run_in_threadpool(self.signed_in)
        except Exception as error:
            if not unavailable(error):
                raise
            # The database is away: the stream stays open (it would get no 401 now
            # either), and the question is asked again once the database is back.
            return True
        self.checked = time.monotonic()
        return valid


async def event_stream(
    context: ManagerContext, caller: Caller, signed_in: Callable[[], bool] = lambda: True
) -> AsyncIterator[str]:
    visibility = Visibility(context, caller)
    recheck = Recheck(signed_in)
    async with context.events.subscribe() as queue:
        yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n"
        last_sent = time.monotonic()
        try:
            while not server_exiting():
                try:
                    event = await asyncio.wait_for(queue.get(), POLL_SECONDS)
                except TimeoutError:
                    if not await recheck.still_valid():
                        return
                    if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
                        last_sent = time.monotonic()
                        yield ": keep-alive\n\n"
                    continue
                if await visibility.allows(event):
                    if not await recheck.still_valid():
                        return
                    last_sent = time.monotonic()
                    yield format_event(event)
        except Exception as error:
            # The answer has begun (200, `text/event-stream`): no error answer can follow,
            # and an error let through made Starlette log "response already started" over
            # the error's own traceback. The stream ends as the end of its body instead;
            # the browser reconnects after `retry:`. Out of file descriptors (checking
            # the caller needs a database connection) is said in one line, as the API
            # says it, and ending the stream gives one back; anything else is a bug.
            if refused_for_storage(context, error, path="/api/events") is None:
                log.exception("live event stream failed; ended", path="/api/events")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": _DOC},
    401: {"model": ErrorResponse},
}


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=_RESPONSES,
    summary="Live changes (Server-Sent Events)",
)
async def events(
    request: Request, context: Context, credentials: Credentials, caller: UserDep
) -> StreamingResponse:
    def signed_in() -> bool:
        """The same check a request with these credentials gets now (`current_user`):
        the session or token still valid, the user not disabled nor their role changed."""
        try:
            return current_user(request, context, credentials) == caller
        except HTTPException:
            return False

    return ClosingStreamingResponse(
        event_stream(context, caller, signed_in),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
