"""Group commit: the runner hot path's small writes share transactions.

Two hundred workers each claiming, reporting progress, storing a frame and completing
make thousands of tiny transactions a second. Run one by one, each pays for a thread
hand-off, a session, `BEGIN IMMEDIATE` and a commit, and on SQLite waits its turn for the
one write lock — more than the statements themselves. Here, one writer thread takes
every operation waiting in its queue, runs them one after the other in a *single*
transaction and commits once; each caller's coroutine is woken with its own result.

What a caller sees does not change: its operation is applied atomically and durably
before its `await` returns, or not at all. Operations see each other's writes in queue
order, exactly as if they had been sent one at a time. If one operation raises (a 409
for a task that is not held, a database error), the whole batch is rolled back and every
operation in it is run again in a transaction of its own, so one caller's error never
undoes or fails another's work. That is why an operation must be a pure function of the
session: side effects (events, log files, log lines) belong after the `await`.

Between managers sharing a database nothing changes either: the batch's transaction is an
ordinary one (`Database.transaction`), so the database's own locking still decides.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from farmhand.manager.db.engine import Database

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_BATCH = 128
"""Operations per transaction at most: bounds how long one commit holds the write lock."""


@dataclass
class _Operation:
    run: Callable[[Session], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Outcome:
    operation: _Operation
    value: Any = None
    error: BaseException | None = None


class GroupCommit:
    """One writer thread for the operations awaited through `run`."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.operations = 0
        """Counters for benchmarks and tests: how well writes are being grouped."""

    async def run(self, operation: Callable[[Session], T]) -> T:
        """Apply `operation` in a shared transaction; its result once committed."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Operation(operation, future, loop))
        return await future

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="farmhand-group-commit", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the writer thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._deliver(self._apply(batch))
            if stopping:
                return

    def _apply(self, batch: list[_Operation]) -> list[_Outcome]:
        self.batches += 1
        self.operations += len(batch)
        try:
            with self._database.transaction() as session:
                return [_Outcome(operation, _isolated(operation, session)) for operation in batch]
        except BaseException as error:  # the writer must outlive whatever an operation does
            if len(batch) == 1:
                return [_Outcome(batch[0], error=_deliverable(error))]
        # Someone's operation raised: nothing of the batch was committed. Each on its own,
        # so the error stays with the operation that caused it.
        return [self._alone(operation) for operation in batch]

    def _alone(self, operation: _Operation) -> _Outcome:
        try:
            with self._database.transaction() as session:
                return _Outcome(operation, operation.run(session))
        except BaseException as error:
            return _Outcome(operation, error=_deliverable(error))

    @staticmethod
    def _deliver(outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome.operation.loop, []).append(outcome)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, group)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting
                log.debug("group commit result dropped: event loop closed")


def _deliverable(error: BaseException) -> BaseException:
    """What a future can carry: asyncio refuses StopIteration (it would end the awaiting
    coroutine's generator), and KeyboardInterrupt or SystemExit raised in a caller's
    request would stop its event loop."""
    if isinstance(error, Exception) and not isinstance(error, StopIteration):
        return error
    wrapped = RuntimeError(f"database operation raised {error!r}")
    wrapped.__cause__ = error
    return wrapped


def _isolated(operation: _Operation, session: Session) -> Any:
    """Run one operation as if it had a session of its own (only the transaction is
    shared): its changes are flushed and its objects forgotten, so the next operation
    reads rows, never objects the previous one loaded (and a Core `UPDATE` made stale)."""
    try:
        return operation.run(session)
    finally:
        session.flush()
        session.expunge_all()


def _settle(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        future = outcome.operation.future
        if future.done():  # the caller was cancelled (a client hung up)
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.value)
