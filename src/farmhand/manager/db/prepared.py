"""Statements of the runner hot path, run on SQLite's own driver.

Every claim, progress report, stored frame and completion runs a handful of small
statements, all built once (module-level Core statements). SQLAlchemy still does a great
deal of Python for each execution: an execution context, parameter processing through
its generic machinery, a result object with its metadata, a `Row` per row. Under the
scheduler benchmark that was about 14 µs a statement, against 2 µs for `sqlite3` itself,
and the manager's write lock is held all that time (docs/PERFORMANCE.md).

A `Prepared` statement is compiled by SQLAlchemy once per dialect, and on SQLite is then
run on the session's own `sqlite3` connection, inside the same transaction, with the
very bind and result conversions SQLAlchemy would apply (its types' processors: JSON,
aware UTC datetimes, booleans). The SQL, its parameters and its rows are the same; only
the Python around them is gone. On any other database it is executed by SQLAlchemy as
before: PostgreSQL's costs are elsewhere, and its driver's parameter style differs.

What it gives up: SQLAlchemy's `before_cursor_execute` events and its `echo` log do not
see these statements, and the rows are named tuples rather than `Row`s (attribute and
index access, unpacking: the same to their readers). A statement whose SQL SQLAlchemy
renders anew at each execution (an expanding `IN`), or whose column defaults SQLAlchemy
computes at each execution, is refused when first run: write it with
`statements.one_of`, or give the values. Its errors are SQLAlchemy's (`DBAPIError`), so
a full or locked database is answered as it always was.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None
S = TypeVar("S", bound=Executable)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    """The parameter of each `?`, in order (one name may appear more than once)."""
    defaults: dict[str, Any]
    """Values bound when the statement was built (`literal`, `bindparam(value=)`)."""
    binds: tuple[Processor, ...]
    """The type's conversion of each `?`'s value, if it has one."""
    results: tuple[Processor, ...]
    row: Callable[..., tuple[Any, ...]] | None
    """Builds a row from its converted values (None: the statement returns no rows)."""


class Prepared(Generic[S]):
    """A Core statement built once, run cheaply on SQLite (module docstring)."""

    def __init__(self, statement: S, *, columns: Sequence[str] = ()) -> None:
        """`columns`: for an `INSERT` given no `values()`, the columns it sets, each from
        the parameter of its name (what SQLAlchemy infers from a run's parameters)."""
        self.statement = statement
        self.columns = tuple(columns)
        self._compiled: WeakKeyDictionary[Dialect, _Compiled] = WeakKeyDictionary()
        """Per dialect, compiled on first use (the dialect is known only then). A
        database has two engines (writes and reads), hence two dialects; a race
        compiles twice, harmlessly."""

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _compile(self.statement, dialect, self.columns)
        return compiled

    def _run(
        self, connection: Connection, parameters: Mapping[str, Any]
    ) -> tuple[_Compiled, list[Any], int]:
        """Run it on SQLite to its end: its compiled form, its raw rows and how many
        rows it changed. A driver error is raised as SQLAlchemy raises it (`DBAPIError`:
        a full disk or a locked database is answered as such, not as a crash)."""
        compiled = self._for(connection.dialect)
        if self.columns and parameters.keys() != set(self.columns):
            # SQLAlchemy would insert exactly the columns named by the parameters.
            raise ValueError(f"an insert of {self.columns} given {sorted(parameters)}")
        values = compiled.defaults | dict(parameters) if compiled.defaults else parameters
        bound = tuple(
            value if process is None else process(value)
            for value, process in zip(
                (values[name] for name in compiled.names), compiled.binds, strict=True
            )
        )
        raw = connection.connection.driver_connection
        if raw is None or not raw.in_transaction:
            # SQLAlchemy begins a transaction at a connection's first statement; run
            # here, the statement would commit on its own.
            raise RuntimeError("a prepared statement runs only inside a transaction")
        try:
            cursor = raw.execute(compiled.sql, bound)
            rows = cursor.fetchall()
        except sqlite3.Error as error:
            raise DBAPIError.instance(
                compiled.sql, bound, error, sqlite3.Error, dialect=connection.dialect
            ) from error
        return compiled, rows, cursor.rowcount

    def all(self, connection: Connection, parameters: Mapping[str, Any] = {}) -> list[Any]:
        """Every row (named tuples on SQLite, SQLAlchemy `Row`s elsewhere)."""
        if connection.dialect.name != "sqlite":
            return list(connection.execute(self.statement, dict(parameters)))
        compiled, rows, _ = self._run(connection, parameters)
        return [_converted(compiled, row) for row in rows]

    def first(self, connection: Connection, parameters: Mapping[str, Any] = {}) -> Any | None:
        """The first row, or None. The statement runs to its end (an `UPDATE … RETURNING`
        changes every row it matches, as with SQLAlchemy)."""
        rows = self.all(connection, parameters)
        return rows[0] if rows else None

    def scalar(self, connection: Connection, parameters: Mapping[str, Any] = {}) -> Any:
        """The first row's first value, or None."""
        row = self.first(connection, parameters)
        return None if row is None else row[0]

    def scalars(self, connection: Connection, parameters: Mapping[str, Any] = {}) -> list[Any]:
        """Each row's first value."""
        return [row[0] for row in self.all(connection, parameters)]

    def execute(self, connection: Connection, parameters: Mapping[str, Any] = {}) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        if connection.dialect.name != "sqlite":
            return int(connection.execute(self.statement, dict(parameters)).rowcount)
        return self._run(connection, parameters)[2]


def _converted(compiled: _Compiled, row: Sequence[Any]) -> tuple[Any, ...]:
    assert compiled.row is not None
    return compiled.row(
        *(
            value if process is None else process(value)
            for value, process in zip(row, compiled.results, strict=True)
        )
    )


def _single(processor: object) -> Processor:
    """A bind processor of one value (a sequence of them is a tuple type's, which the
    hot path does not use)."""
    if processor is None:
        return None
    if not callable(processor):
        raise ValueError("a statement with tuple-typed parameters cannot be prepared")
    return processor


def _compile(statement: Executable, dialect: Dialect, inserted: tuple[str, ...]) -> _Compiled:
    if not isinstance(statement, ClauseElement):
        raise TypeError(f"not a SQL statement: {statement!r}")
    compiled = statement.compile(dialect=dialect, column_keys=list(inserted) or None)
    assert isinstance(compiled, SQLCompiler)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError(
            "a statement whose SQL is rendered at each execution (an expanding IN?) "
            f"cannot be prepared: {compiled.string}"
        )
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError(
            "a statement with column defaults computed at each execution (`default=` or "
            f"`onupdate=` functions) cannot be prepared: {compiled.string}"
        )
    names = tuple(compiled.positiontup or ())
    processors = compiled._bind_processors
    columns = compiled._result_columns
    results = tuple(column.type._cached_result_processor(dialect, None) for column in columns)
    row = (
        namedtuple("PreparedRow", [column.keyname for column in columns], rename=True)
        if columns
        else None
    )
    return _Compiled(
        sql=compiled.string,
        names=names,
        defaults={
            name: value
            for name, value in compiled.construct_params(_check=False).items()
            if not compiled.binds[name].required
        },
        binds=tuple(_single(processors.get(name)) for name in names),
        results=results,
        row=row,
    )
