"""The orchestrator's HTTP API: the tutorial's Part 2 contract, hardened.

`POST /render {"from": a, "to": b}` answers `202` with `Location: /status/{id}` and
`Retry-After`; `GET /status/{id}` answers `202` while batches are rendering, `200` when
every batch is done, `502` when a batch failed on every attempt (the failure came from
the nodes behind us: a gateway's error), and `404` for an id it does not know.

Input is strict (JSON integers, `from <= to`, at most `max_frames` frames → else 400);
at most `max_active` renders run at once (`503` + Retry-After past that); each client
(by address) may start at most `rate_limit` renders per `rate_window` seconds (`429` +
Retry-After past that). A body over 64 KiB is a 413, one nesting deeper than 32 levels a
400 (`farmhand.node.limits`, shared with the node), and a request whose head or body
stops arriving for `client_timeout` seconds a 408, its connection closed, as the
manager's (`farmhand.manager.connections`). `GET /metrics` answers renders,
batches and nodes in Prometheus' text format.
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
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from farmhand import __version__
from farmhand.manager.api.errors import describe_validation_error
from farmhand.node.limits import BodyLimitMiddleware
from farmhand.orchestrator.batches import BatchState, split
from farmhand.orchestrator.dispatch import Dispatcher, DispatchSettings, Render
from farmhand.shared.frames import MAX_FRAME
from farmhand.shared.ids import path_id
from farmhand.shared.metrics import CONTENT_TYPE, Family
from farmhand.shared.metrics import render as render_metrics
from farmhand.shared.timeouts import CLIENT_TIMEOUT


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
    client_timeout: float = CLIENT_TIMEOUT
    """Seconds a request's head may take (timed by the server's protocol,
    `farmhand.manager.connections`) and its body may stall before a 408."""


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
    """At most `limit` events per `window` seconds per key (a sliding window).

    Asking (`wait_time`) and counting (`record`) are separate so that only what actually
    happened is counted: a request refused for bad input or because the orchestrator is
    busy must not use up the client's budget for renders it never got.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen

    def wait_time(self, key: str, now: float | None = None) -> float:
        """0 if `key` may go now; else seconds until it may. Counts nothing."""
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._recent(key, now)
            return seen[0] + self.window - now if len(seen) >= self.limit else 0.0

    def record(self, key: str, now: float | None = None) -> None:
        """Count one event for `key` (call it once the event really happened)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._seen) > 10_000:  # forget clients with nothing left in the window
                for key_, times in list(self._seen.items()):
                    if not times or times[-1] <= now - self.window:
                        del self._seen[key_]


HOW_TO_ASK = 'send JSON {"from": <integer>, "to": <integer>} with Content-Type: application/json'


def _error(status: int, detail: str, retry: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, int(retry + 0.999)))} if retry is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _refuse_body(status: int, problem: str) -> Response:
    """The body limits' refusals in the orchestrator's style: `{"detail": …}`, as every
    other error it answers, with the same hint as its other 400s."""
    if status == 413:
        return _error(413, f"{problem}; {HOW_TO_ASK}")
    if status == 408:
        return _error(408, problem)
    return _error(status, f"{HOW_TO_ASK}; {problem}")


def _metrics(settings: OrchestratorSettings, renders: list[Render], started: int) -> list[Family]:
    """What shows the orchestrator filling up or its renders failing, read at scrape time
    from the renders `GET /status` answers from, so the two never disagree."""
    statuses = dict.fromkeys(("running", "done", "failed"), 0)
    states = dict.fromkeys(BatchState, 0)
    on_node = dict.fromkeys(settings.nodes, 0)
    active = 0
    for render in renders:
        active += not render.finished.is_set()
        with render.lock:
            statuses[render.status] += 1
            for batch in render.batches:
                states[batch.state] += 1
                if batch.state is BatchState.RUNNING and batch.node in on_node:
                    on_node[batch.node] += 1
    by_status = Family(
        "farmhand_orchestrator_renders",
        f"Renders remembered (all unfinished, the last {settings.keep_finished} finished), "
        "by the status GET /status answers.",
    )
    for status, count in statuses.items():
        by_status.add(count, status=status)
    by_state = Family(
        "farmhand_orchestrator_batches", "Batches of the renders remembered, by state."
    )
    for state, count in states.items():
        by_state.add(count, state=state.value)
    per_node = Family(
        "farmhand_orchestrator_node_batches_running", "Batches each node is rendering now."
    )
    for node, count in on_node.items():
        per_node.add(count, node=node)
    return [
        Family("farmhand_orchestrator_info", "This orchestrator's farmhand version.").add(
            1, version=__version__
        ),
        by_status,
        Family(
            "farmhand_orchestrator_renders_started_total",
            "Renders accepted (POST /render answered 202) since the orchestrator started.",
            "counter",
        ).add(started),
        Family(
            "farmhand_orchestrator_renders_active",
            "Renders still driving nodes; POST /render answers 503 at max_active.",
        ).add(active),
        Family("farmhand_orchestrator_max_active", "Renders at once at most (--max-active).").add(
            settings.max_active
        ),
        by_state,
        Family("farmhand_orchestrator_nodes", "Nodes configured (--node).").add(
            len(settings.nodes)
        ),
        per_node,
        Family(
            "farmhand_orchestrator_rate_limit",
            "Renders a client may start per rate window (--rate-limit); past it 429.",
        ).add(settings.rate_limit),
        Family(
            "farmhand_orchestrator_rate_limit_window_seconds",
            "The rate limit's sliding window (--rate-window).",
        ).add(settings.rate_window),
    ]


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
    app.add_middleware(
        BodyLimitMiddleware, refuse=_refuse_body, idle_timeout=settings.client_timeout
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, error: RequestValidationError) -> Response:
        return _error(400, f"{HOW_TO_ASK}; " + describe_validation_error(error))

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
            413: {"description": "The body is over 64 KiB"},
            429: {"description": "Too many renders from this client; retry after Retry-After"},
            503: {"description": "Too many renders running; retry after Retry-After"},
        },
    )
    def render(body: RenderRequest, request: Request) -> Response:
        """Render frames `from`..`to` over the nodes; poll the `Location` it answers with."""
        if body.to < body.from_:
            return _error(400, f"'to' ({body.to}) is before 'from' ({body.from_})")
        count = body.to - body.from_ + 1
        if count > settings.max_frames:
            return _error(400, f"{count} frames is more than the {settings.max_frames} allowed")
        client = request.client.host if request.client else "unknown"
        with lock:  # held from the checks to the start, so two requests cannot both squeeze in
            wait = limiter.wait_time(client)
            if wait > 0:
                return _error(
                    429,
                    f"more than {settings.rate_limit} renders in {settings.rate_window:g} s",
                    wait,
                )
            active = sum(not r.finished.is_set() for r in renders.values())
            if active >= settings.max_active:
                return _error(
                    503, f"busy: {active} renders running, retry later", settings.retry_after
                )
            limiter.record(client)  # only renders that start count against the rate limit
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
            number = path_id(render_id)
            found = renders.get(number) if number is not None else None
        if found is None:
            return _error(404, f"no render {render_id}")
        info = _status(found)
        body = info.model_dump(mode="json", by_alias=True)
        if info.status == "done":
            return JSONResponse(body, status_code=200)
        if info.status == "failed":
            return JSONResponse(body, status_code=502)
        return JSONResponse(
            body, status_code=202, headers={"Location": f"/status/{found.id}", **retry}
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text 0.0.4"}},
    )
    def metrics() -> PlainTextResponse:
        """Renders, batches and nodes, for Prometheus."""
        with lock:
            remembered = list(renders.values())
            started = dispatcher.ids_issued
        text = render_metrics(_metrics(settings, remembered, started))
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    app.state.renders = renders
    return app
