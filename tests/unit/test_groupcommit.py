"""Group commit (`Database.batched`): shared transactions, per-caller results and errors.

Every test uses a real SQLite file built by the migrations. Where the composition of a
batch matters, a `Gate` operation holds the writer thread until the test has queued the
operations it wants grouped, so that they form one batch deterministically.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi import HTTPException
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from farmhand.manager.db.engine import Database
from farmhand.manager.db.groupcommit import MAX_BATCH
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import LoginFailure, RunnerRegistrationToken

T = TypeVar("T")

WRITER = "farmhand-group-commit"
TIMEOUT = 10.0
"""Seconds any one test's event loop may take: a hung writer fails instead of hanging."""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'farm.sqlite3'}")
    upgrade(database.engine)
    with database.transaction() as session:
        session.add(RunnerRegistrationToken(token_hash="counter", created_at=_now(), uses=0))
    yield database
    database.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


def _run(main: Callable[[], Coroutine[Any, Any, T]], timeout: float = TIMEOUT) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


def _keys(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(LoginFailure.key).order_by(LoginFailure.id)))


def _counter(db: Database) -> int:
    with db.read() as session:
        uses = session.scalar(
            select(RunnerRegistrationToken.uses).where(
                RunnerRegistrationToken.token_hash == "counter"
            )
        )
    assert uses is not None
    return uses


def _writers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == WRITER}


_batch_numbers = itertools.count()


def _batch_of(session: Session) -> int:
    """The same number for every operation run in one transaction (one session)."""
    if "test_batch" not in session.info:
        session.info["test_batch"] = next(_batch_numbers)
    number: int = session.info["test_batch"]
    return number


def _insert(key: str, seen: list[tuple[str, int]] | None = None) -> Callable[[Session], int]:
    """An operation adding a row with `key` and counting one use; the row's id."""

    def operation(session: Session) -> int:
        if seen is not None:
            seen.append((key, _batch_of(session)))
        row = LoginFailure(key=key, at=_now())
        session.add(row)
        session.flush()
        session.execute(
            update(RunnerRegistrationToken)
            .where(RunnerRegistrationToken.token_hash == "counter")
            .values(uses=RunnerRegistrationToken.uses + 1)
        )
        return row.id

    return operation


def _insert_then_raise(key: str, error: Exception) -> Callable[[Session], int]:
    def operation(session: Session) -> int:
        _insert(key)(session)
        raise error

    return operation


class Gate:
    """An operation holding the writer thread until `opened` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, session: Session) -> str:
        self.entered.set()
        assert self.opened.wait(TIMEOUT), "the test never opened the gate"
        return "gate"


async def _hold_writer(db: Database) -> tuple[Gate, asyncio.Task[str]]:
    """Occupy the writer with a `Gate`: what is queued next waits to form one batch."""
    gate = Gate()
    held = asyncio.ensure_future(db.batched(gate))
    assert await asyncio.to_thread(gate.entered.wait, TIMEOUT), "the writer never started"
    return gate, held


async def _queued(calls: list[Awaitable[T]]) -> list[asyncio.Task[T]]:
    """Start the calls; return once each has put its operation on the queue."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(3):  # `run` queues before its first await: one turn of the loop is enough
        await asyncio.sleep(0)
    return tasks


async def _in_one_batch(db: Database, operations: list[Callable[[Session], Any]]) -> list[Any]:
    """Run `operations` as one batch (queued while a `Gate` holds the writer); their
    results in order, an operation's exception in its place."""
    gate, held = await _hold_writer(db)
    tasks = await _queued([db.batched(operation) for operation in operations])
    gate.opened.set()
    assert await held == "gate"
    return await asyncio.gather(*tasks, return_exceptions=True)


# 1. Many concurrent callers -----------------------------------------------------------


def test_concurrent_calls_get_their_own_results_all_committed_and_grouped(
    db: Database,
) -> None:
    count = 200
    seen: list[tuple[str, int]] = []

    async def main() -> list[tuple[int, int]]:
        async def one(i: int) -> tuple[int, int]:
            return i, await db.batched(_insert(f"k{i}", seen))

        return await asyncio.gather(*(one(i) for i in range(count)))

    batches_before = db.group_commit.batches
    operations_before = db.group_commit.operations
    results = _run(main)

    ids_by_key = _ids_by_key(db)  # what was committed
    assert len(ids_by_key) == count
    # Each caller got the id of *its own* row, not a neighbour's.
    for i, row_id in results:
        assert ids_by_key[f"k{i}"] == row_id
    assert _counter(db) == count
    assert db.group_commit.operations - operations_before == count
    batches = db.group_commit.batches - batches_before
    assert 1 <= batches < count, f"{batches} transactions for {count} operations: not grouped"
    # The counter matches the transactions the operations really shared.
    per_batch = Counter(batch for _key, batch in seen)
    assert len(per_batch) == batches
    assert max(per_batch.values()) <= MAX_BATCH


def _ids_by_key(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {
            row.key: row.id for row in session.execute(select(LoginFailure.key, LoginFailure.id))
        }


def test_queued_operations_form_batches_of_at_most_max_batch(db: Database) -> None:
    count = MAX_BATCH + 72
    seen: list[tuple[str, int]] = []

    async def main() -> list[int]:
        return await _in_one_batch(db, [_insert(f"k{i}", seen) for i in range(count)])

    batches_before = db.group_commit.batches
    ids = _run(main)

    assert len(set(ids)) == count
    assert _keys(db) == [f"k{i}" for i in range(count)]
    # The gate alone, then everything queued behind it in as few transactions as allowed.
    assert db.group_commit.batches - batches_before == 3
    sizes = list(Counter(batch for _key, batch in seen).values())
    assert sizes == [MAX_BATCH, count - MAX_BATCH]
    # In queue order: the first MAX_BATCH in the first transaction.
    first_batch = seen[0][1]
    assert [key for key, batch in seen if batch == first_batch] == [
        f"k{i}" for i in range(MAX_BATCH)
    ]


# 2. One operation raising ---------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [ValueError("operation 7 is wrong"), HTTPException(409, "task 7 is not held")],
    ids=["ValueError", "HTTPException"],
)
def test_one_raising_operation_fails_only_its_caller(db: Database, error: Exception) -> None:
    count = 20
    failing = 7
    seen: list[tuple[str, int]] = []

    def operation(i: int) -> Callable[[Session], int]:
        if i == failing:
            return _insert_then_raise(f"k{i}", error)
        return _insert(f"k{i}", seen)

    async def main() -> list[int | BaseException]:
        return await _in_one_batch(db, [operation(i) for i in range(count)])

    results = _run(main)

    assert results[failing] is error  # the caller gets its own exception, unchanged
    others = [result for i, result in enumerate(results) if i != failing]
    assert all(isinstance(result, int) for result in others), others
    ids_by_key = _ids_by_key(db)
    # The failing operation's row was written before it raised, and is not committed...
    assert f"k{failing}" not in ids_by_key
    # ...while every other caller's row is, and each got its own row's id.
    assert set(ids_by_key) == {f"k{i}" for i in range(count) if i != failing}
    for i, result in enumerate(results):
        if i != failing:
            assert ids_by_key[f"k{i}"] == result
    assert _counter(db) == count - 1
    # Tried together up to the failure, then each again in a transaction of its own.
    together = {batch for _key, batch in seen[:failing]}
    alone = [batch for _key, batch in seen[failing:]]
    assert len(together) == 1
    assert len(alone) == count - 1
    assert len(set(alone)) == count - 1
    assert together.isdisjoint(alone)


def test_a_lone_raising_operation_fails_its_caller_and_the_writer_goes_on(db: Database) -> None:
    async def main() -> int:
        with pytest.raises(ValueError, match="alone"):
            await db.batched(_insert_then_raise("alone", ValueError("alone")))
        return await db.batched(_insert("after"))

    row_id = _run(main)

    assert _ids_by_key(db) == {"after": row_id}
    assert _counter(db) == 1


def test_a_commit_failure_fails_only_the_operation_that_caused_it(db: Database) -> None:
    """An error raised only at commit (a unique constraint) is also traced to its caller."""

    def token(name: str) -> Callable[[Session], str]:
        def operation(session: Session) -> str:
            session.add(RunnerRegistrationToken(token_hash=name, created_at=_now()))
            return name

        return operation

    async def main() -> list[str | BaseException]:
        return await _in_one_batch(db, [token(name) for name in ("a", "b", "a", "c")])

    results = _run(main)

    assert results[0] == "a"
    assert results[1] == "b"
    assert isinstance(results[2], Exception)
    assert "UNIQUE" in str(results[2])
    assert results[3] == "c"
    with db.read() as session:
        names = set(session.scalars(select(RunnerRegistrationToken.token_hash)))
    assert names == {"counter", "a", "b", "c"}


# 3. Queue order within a batch -----------------------------------------------------------


def _count_then_insert(key: str) -> Callable[[Session], tuple[int, list[str]]]:
    """How many rows the operation saw (and which), before adding its own."""

    def operation(session: Session) -> tuple[int, list[str]]:
        keys = list(session.scalars(select(LoginFailure.key).order_by(LoginFailure.id)))
        session.add(LoginFailure(key=key, at=_now()))
        session.flush()
        return len(keys), keys

    return operation


def test_operations_see_each_others_writes_in_queue_order(db: Database) -> None:
    count = 50

    async def main() -> list[tuple[int, list[str]]]:
        return await _in_one_batch(db, [_count_then_insert(f"k{i}") for i in range(count)])

    batches_before = db.group_commit.batches
    results = _run(main)

    assert db.group_commit.batches - batches_before == 2  # the gate, then all 50 at once
    for i, (seen, keys) in enumerate(results):
        assert seen == i
        assert keys == [f"k{j}" for j in range(i)]
    assert _keys(db) == [f"k{i}" for i in range(count)]


def test_after_a_failure_the_others_still_see_each_other_in_order(db: Database) -> None:
    """Run again one by one, operations keep their order; the failed one's write is gone."""
    count = 10
    failing = 4

    def operation(i: int) -> Callable[[Session], tuple[int, list[str]]]:
        if i != failing:
            return _count_then_insert(f"k{i}")

        def fail(session: Session) -> tuple[int, list[str]]:
            _count_then_insert(f"k{i}")(session)
            raise ValueError("no")

        return fail

    async def main() -> list[Any]:
        return await _in_one_batch(db, [operation(i) for i in range(count)])

    results = _run(main)

    assert isinstance(results[failing], ValueError)
    for i, result in enumerate(results):
        if i == failing:
            continue
        expected = [f"k{j}" for j in range(i) if j != failing]
        assert result == (len(expected), expected)


# 4. Cancelled callers ---------------------------------------------------------------------


def test_a_cancelled_caller_does_not_break_the_writer(db: Database) -> None:
    async def main() -> tuple[tuple[int | BaseException, ...], int]:
        gate, held = await _hold_writer(db)
        before, cancelled, after = await _queued(
            [db.batched(_insert(key)) for key in ("before", "cancelled", "after")]
        )
        cancelled.cancel()
        await asyncio.sleep(0)
        gate.opened.set()
        await held
        results = await asyncio.gather(before, cancelled, after, return_exceptions=True)
        # A later caller, in a batch of its own, is served too.
        return results, await db.batched(_insert("later"))

    results, later = _run(main)

    assert isinstance(results[1], asyncio.CancelledError)
    ids_by_key = _ids_by_key(db)
    assert results[0] == ids_by_key["before"]
    assert results[2] == ids_by_key["after"]
    assert later == ids_by_key["later"]
    # What the code does: an operation already queued is not withdrawn by cancelling its
    # caller; it is applied with the others and its result dropped.
    assert "cancelled" in ids_by_key
    assert _counter(db) == 4


def test_a_caller_whose_event_loop_closed_does_not_break_the_writer(db: Database) -> None:
    """The result of a caller whose loop is gone is dropped; other loops are served."""
    gate = Gate()
    abandoned: list[asyncio.Future[str]] = []

    async def abandon() -> None:
        abandoned.append(asyncio.ensure_future(db.batched(gate)))
        assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
        # asyncio.run returns with the caller still waiting, and closes its loop.

    _run(abandon)
    gate.opened.set()  # the writer now delivers to a closed loop

    async def later() -> int:
        return await db.batched(_insert("later"))

    row_id = _run(later)
    assert _ids_by_key(db) == {"later": row_id}


# 5. Dispose --------------------------------------------------------------------------------


def test_dispose_stops_the_writer_and_a_later_call_starts_a_new_one(db: Database) -> None:
    others = _writers()

    async def call(key: str) -> int:
        return await db.batched(_insert(key))

    _run(lambda: call("first"))
    ours = _writers() - others
    assert len(ours) == 1, "one writer thread per database, started by the first call"

    db.dispose()
    assert not any(thread.is_alive() for thread in ours)
    assert _writers() <= others

    # The writer is started again on demand; the engine reconnects after dispose().
    row_id = _run(lambda: call("after dispose"))
    restarted = _writers() - others
    assert len(restarted) == 1
    assert restarted.isdisjoint(ours)
    assert _ids_by_key(db)["after dispose"] == row_id
    assert _counter(db) == 2

    db.dispose()
    assert not any(thread.is_alive() for thread in restarted)


def test_dispose_finishes_what_is_queued(db: Database) -> None:
    count = 30

    async def main() -> list[int]:
        gate, held = await _hold_writer(db)
        tasks = await _queued([db.batched(_insert(f"k{i}")) for i in range(count)])
        gate.opened.set()
        db.group_commit.stop()  # blocks this loop until the writer has ended
        assert _writers() <= others
        await held
        return await asyncio.gather(*tasks)

    others = _writers()
    ids = _run(main)

    assert _ids_by_key(db) == {f"k{i}": row_id for i, row_id in enumerate(ids)}
    assert _counter(db) == count


# What an operation must not be able to break ----------------------------------------------


def test_an_operation_raising_stopiteration_does_not_strand_the_others(db: Database) -> None:
    def empty_next(session: Session) -> int:
        return int(next(iter(session.scalars(select(LoginFailure.id)))))  # no rows

    async def main() -> list[Any]:
        gate, held = await _hold_writer(db)
        tasks = await _queued(
            [db.batched(empty_next), db.batched(_insert("a")), db.batched(_insert("b"))]
        )
        gate.opened.set()
        await held
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = _run(main)

    assert isinstance(results[0], Exception)
    assert isinstance(results[1], int)
    assert isinstance(results[2], int)


class _Abort(BaseException):
    """Not an Exception: like KeyboardInterrupt or SystemExit raised inside an operation."""


def test_an_operation_raising_a_base_exception_does_not_kill_the_writer(db: Database) -> None:
    def abort(session: Session) -> int:
        raise _Abort

    async def main() -> int:
        # Delivered as a RuntimeError: raised in the caller's coroutine, a BaseException
        # such as SystemExit would stop the whole event loop.
        with pytest.raises(RuntimeError, match="_Abort") as caught:
            await db.batched(abort)
        assert isinstance(caught.value.__cause__, _Abort)
        return await db.batched(_insert("later"))

    row_id = _run(main)
    assert _ids_by_key(db) == {"later": row_id}


def test_operations_in_one_batch_read_fresh_orm_state(db: Database) -> None:
    def token(session: Session) -> RunnerRegistrationToken:
        return session.scalars(
            select(RunnerRegistrationToken).where(RunnerRegistrationToken.token_hash == "counter")
        ).one()

    def uses(session: Session) -> int:
        return token(session).uses

    def bump(session: Session) -> None:
        session.execute(text("UPDATE runner_registration_tokens SET uses = uses + 1"))

    async def main() -> list[Any]:
        gate, held = await _hold_writer(db)
        tasks = await _queued([db.batched(token), db.batched(bump), db.batched(uses)])
        gate.opened.set()
        await held
        return await asyncio.gather(*tasks)

    first, _, later_uses = _run(main)

    assert _counter(db) == 1
    assert first.uses == 0
    assert later_uses == 1  # as one at a time; batched, it reads the stale object: 0
