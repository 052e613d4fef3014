"""The orchestrator's HTTP API: the tutorial's Part 2 contract, hardened.

`POST /render {"from": a, "to": b}` answers `202` with `Location: /status/{id}` and
`Retry-After`; `GET /status/{id}` answers `202` while batches are rendering, `200` when
every batch is done, `502` when a batch failed on every attempt (the failure came from
the nodes behind us: a gateway's error), and `404` for an id it does not know.

Input is strict (JSON integers, `from <= to`, at most `max_frames` frames → else 400);
at most `max_active` renders run at once (`503` + Retry-After past that); each client
(by address) may start at most `rate_limit` renders per `rate_window` seconds (`429` +
Retry-After past that).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from farmhand.manager.api.errors import describe_validation_error
from farmhand.orchestrator.batches import split
from farmhand.orchestrator.dispatch import Dispatcher, DispatchSettings, Render
from farmhand.shared.frames import MAX_FRAME


@dataclass(frozen=True)
class OrchestratorSettings:
    """Everything the orchestrator needs; passed in, never read from globals."""

    nodes: tuple[str, ...]
    batch_size: int = 10
    max_frames: int = 10_000
    max_active: int = 4
    retry_after: int = 5
    rate_limit: int = 30
    rate_window: float = 60.0
    max_attempts: int = 3
    max_poll_interval: float = 5.0
    keep_finished: int = 1000
    """Finished renders remembered for `GET /status` (oldest forgotten first)."""


class RenderRequest(BaseModel):
    """`{"from": 1, "to": 6}`: strict JSON integers (`"1"`, `1.0`, `true` are refused)."""

    model_config = ConfigDict(strict=True, populate_by_name=True, extra="forbid")

    from_: StrictInt = Field(alias="from", ge=-MAX_FRAME, le=MAX_FRAME)
    to: StrictInt = Field(ge=-MAX_FRAME, le=MAX_FRAME)


class BatchInfo(BaseModel):
    from_: int = Field(serialization_alias="from")
    to: int
    state: Literal["pending", "running", "done", "failed"]
    node: str | None
    errors: list[str]


class RenderStatus(BaseModel):
    id: int
    status: Literal["running", "done", "failed"]
    from_: int = Field(serialization_alias="from")
    to: int
    batches_done: int
    batches_total: int
    error: str | None
    batches: list[BatchInfo]


def _status(render: Render) -> RenderStatus:
    with render.lock:
        batches = [
            BatchInfo(
                from_=b.first, to=b.last, state=b.state.value, node=b.node, errors=list(b.errors)
            )
            for b in render.batches
        ]
        status = render.status
        error = render.error
    return RenderStatus(
        id=render.id,
        status=status,
        from_=render.first,
        to=render.last,
        batches_done=sum(b.state == "done" for b in batches),
        batches_total=len(batches),
        error=error,
        batches=batches,
    )


class RateLimiter:
    """At most `limit` events per `window` seconds per key (a sliding window)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_time(self, key: str, now: float | None = None) -> float:
        """0 if `key` may go now (and counts it); else seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if len(seen) >= self.limit:
                return seen[0] + self.window - now
            seen.append(now)
            if len(self._seen) > 10_000:  # forget clients with nothing left in the window
                for key_, times in list(self._seen.items()):
                    if times[-1] <= now - self.window:
                        del self._seen[key_]
            return 0.0


def _error(status: int, detail: str, retry: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, int(retry + 0.999)))} if retry is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_orchestrator_app(
    settings: OrchestratorSettings, transport: httpx.BaseTransport | None = None
) -> FastAPI:
    """The orchestrator's ASGI app; `transport` replaces the network to the nodes (tests)."""
    dispatcher = Dispatcher(
        DispatchSettings(
            nodes=settings.nodes,
            max_attempts=settings.max_attempts,
            max_poll_interval=settings.max_poll_interval,
        ),
        transport,
    )
    renders: OrderedDict[int, Render] = OrderedDict()
    lock = threading.Lock()
    limiter = RateLimiter(settings.rate_limit, settings.rate_window)
    retry = {"Retry-After": str(settings.retry_after)}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            dispatcher.stop()

    app = FastAPI(
        title="farmhand orchestrator",
        summary="Splits frame ranges into batches and spreads them over farmhand nodes.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, error: RequestValidationError) -> Response:
        return _error(
            400,
            'send JSON {"from": <integer>, "to": <integer>} with Content-Type: '
            "application/json; " + describe_validation_error(error),
        )

    def _forget_old() -> None:
        finished = [i for i, r in renders.items() if r.finished.is_set()]
        for render_id in finished[: max(0, len(finished) - settings.keep_finished)]:
            del renders[render_id]

    @app.post(
        "/render",
        status_code=202,
        response_model=RenderStatus,
        response_model_by_alias=True,
        responses={
            400: {"description": "Invalid input"},
            429: {"description": "Too many renders from this client; retry after Retry-After"},
            503: {"description": "Too many renders running; retry after Retry-After"},
        },
    )
    def render(body: RenderRequest, request: Request) -> Response:
        """Render frames `from`..`to` over the nodes; poll the `Location` it answers with."""
        client = request.client.host if request.client else "unknown"
        wait = limiter.wait_time(client)
        if wait > 0:
            return _error(
                429, f"more than {settings.rate_limit} renders in {settings.rate_window:g} s", wait
            )
        if body.to < body.from_:
            return _error(400, f"'to' ({body.to}) is before 'from' ({body.from_})")
        count = body.to - body.from_ + 1
        if count > settings.max_frames:
            return _error(400, f"{count} frames is more than the {settings.max_frames} allowed")
        with lock:
            active = sum(not r.finished.is_set() for r in renders.values())
            if active >= settings.max_active:
                return _error(
                    503, f"busy: {active} renders running, retry later", settings.retry_after
                )
            new = Render(
                dispatcher.new_id(),
                body.from_,
                body.to,
                split(body.from_, body.to, settings.batch_size),
            )
            renders[new.id] = new
            _forget_old()
        dispatcher.start(new)
        return JSONResponse(
            _status(new).model_dump(mode="json", by_alias=True),
            status_code=202,
            headers={"Location": f"/status/{new.id}", **retry},
        )

    @app.get(
        "/status/{render_id}",
        response_model=RenderStatus,
        response_model_by_alias=True,
        responses={
            202: {"description": "Still rendering; poll again after Retry-After"},
            404: {"description": "No such render"},
            502: {"description": "A batch failed on every attempt; `error` says why"},
        },
    )
    def status(render_id: str) -> Response:
        """202 while rendering, 200 when every frame is done, 502 if it failed."""
        with lock:
            found = renders.get(int(render_id)) if render_id.isdigit() else None
        if found is None:
            return _error(404, f"no render {render_id}")
        info = _status(found)
        body = info.model_dump(mode="json", by_alias=True)
        if info.status == "done":
            return JSONResponse(body, status_code=200)
        if info.status == "failed":
            return JSONResponse(body, status_code=502)
        return JSONResponse(
            body, status_code=202, headers={"Location": f"/status/{render_id}", **retry}
        )

    app.state.renders = renders
    return app
