"""Driving renders on the nodes: one thread per node per render, pulling batches.

Each node's thread takes the next batch it may run, `POST /job`s it and polls the
`Location` it gets, honouring `Retry-After` (capped, so a node that says "60" does not
stall a short batch). What the node answers decides the batch:

- `200` → done;
- `503` (busy) → the batch goes back for another node, and this node's thread waits
  the node's `Retry-After` before asking it again (not counted as a failure);
- a failed render (`500 Job failed: …`), a lost job (`400 Job not found`: the node
  restarted), an unreachable node or any other answer → a failed attempt: the batch goes
  to another node; after `max_attempts` failed attempts the render fails, with every
  node's reason in its error.

Nothing here parses user input: batches are integers from `batches.split`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import structlog

from farmhand.orchestrator.batches import Batch, BatchState, batch_failed, next_batch

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DispatchSettings:
    nodes: tuple[str, ...]
    max_attempts: int = 3
    max_poll_interval: float = 5.0
    """Poll a node at least this often, whatever its Retry-After says."""
    request_timeout: float = 30.0
    batch_timeout: float = 6 * 3600.0
    unreachable_pause: float = 2.0
    """After a node could not be reached, its thread waits this long before the next try."""


@dataclass
class Render:
    id: int
    first: int
    last: int
    batches: list[Batch]
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)

    @property
    def status(self) -> str:
        """`running`, `done` or `failed` (any batch out of attempts)."""
        states = {batch.state for batch in self.batches}
        if BatchState.FAILED in states:
            return "failed"
        if states == {BatchState.DONE}:
            return "done"
        return "running"

    @property
    def error(self) -> str | None:
        failed = [b for b in self.batches if b.state is BatchState.FAILED]
        if not failed:
            return None
        return "; ".join(f"frames {b.label} failed: {' | '.join(b.errors)}" for b in failed)


@dataclass(frozen=True)
class _Busy:
    retry_after: float


@dataclass(frozen=True)
class _Failed:
    error: str
    unreachable: bool = False


_Outcome = _Busy | _Failed | None
"""None: the batch rendered."""


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """The response's `Retry-After` seconds (a number; dates are not used by nodes)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


class Dispatcher:
    """Runs renders on the nodes; `stop()` ends every thread at its next wait."""

    def __init__(
        self, settings: DispatchSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.stopping = threading.Event()
        self._last_id = 0
        self._ids_lock = threading.Lock()

    def new_id(self) -> int:
        with self._ids_lock:
            self._last_id += 1
            return self._last_id

    @property
    def ids_issued(self) -> int:
        """Renders numbered so far (one per accepted `POST /render`), never forgotten."""
        return self._last_id

    def start(self, render: Render) -> None:
        threads = [
            threading.Thread(
                target=self._node_loop,
                args=(render, node),
                name=f"render-{render.id}-{node}",
                daemon=True,
            )
            for node in self.settings.nodes
        ]
        for thread in threads:
            thread.start()

        def watch() -> None:
            for thread in threads:
                thread.join()
            render.finished.set()
            log.info("render finished", render_id=render.id, status=render.status)

        threading.Thread(target=watch, name=f"render-{render.id}", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()

    # -- one node's share of one render

    def _node_loop(self, render: Render, node: str) -> None:
        with httpx.Client(
            base_url=node, timeout=self.settings.request_timeout, transport=self.transport
        ) as client:
            while not self.stopping.is_set():
                with render.lock:
                    if render.status != "running":
                        return
                    batch = next_batch(render.batches, node, len(self.settings.nodes))
                    if batch is None:
                        if not any(b.state is BatchState.RUNNING for b in render.batches):
                            return
                    else:
                        batch.state, batch.node = BatchState.RUNNING, node
                if batch is None:
                    # Another node's batch may still fail and come back to us.
                    self.stopping.wait(0.2)
                    continue
                blog = log.bind(render_id=render.id, node=node, frames=batch.label)
                outcome = self._run_batch(client, batch)
                pause = 0.0
                with render.lock:
                    if outcome is None:
                        batch.state = BatchState.DONE
                        blog.info("batch done")
                    elif isinstance(outcome, _Busy):
                        batch.state, batch.node = BatchState.PENDING, None
                        pause = outcome.retry_after
                        blog.info("node busy", retry_after=pause)
                    else:
                        batch_failed(batch, node, outcome.error, self.settings.max_attempts)
                        pause = self.settings.unreachable_pause if outcome.unreachable else 0.0
                        blog.warning("batch failed", error=outcome.error, state=batch.state)
                if pause:
                    self.stopping.wait(min(pause, self.settings.max_poll_interval))

    def _run_batch(self, client: httpx.Client, batch: Batch) -> _Outcome:
        try:
            answer = client.post("/job", json={"from": batch.first, "to": batch.last})
        except httpx.HTTPError as error:
            return _Failed(f"unreachable: {error or type(error).__name__}", unreachable=True)
        if answer.status_code == 503:
            return _Busy(retry_after(answer))
        location = answer.headers.get("Location")
        if answer.status_code != 202 or not location:
            return _Failed(f"POST /job answered {answer.status_code} {answer.text[:300]}")
        deadline = time.monotonic() + self.settings.batch_timeout
        while True:
            wait = min(retry_after(answer), self.settings.max_poll_interval)
            if self.stopping.wait(wait):
                return _Failed("orchestrator stopping")
            if time.monotonic() > deadline:
                return _Failed(f"no answer within {self.settings.batch_timeout:.0f} s")
            try:
                answer = client.get(location)
            except httpx.HTTPError as error:
                return _Failed(f"unreachable: {error or type(error).__name__}", unreachable=True)
            if answer.status_code == 202:
                continue
            if answer.status_code == 200:
                return None
            return _Failed(f"{answer.status_code} {answer.text[:300]}")
