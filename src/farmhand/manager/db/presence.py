"""Is the database there, and usable? Checked at start, before anything is written.

A data dir holds a farm's files (blobs, task logs, tokens, thumbnails) beside its
database. Without that database, a manager used to start as a brand-new, empty farm on
those files: it wrote new tokens over the old ones (every worker's registration token
stopped working), its garbage collection then deleted every stored file as a stray
(no row names it), and new jobs picked up the old jobs' task logs. A missing database
is a lost or misplaced one far more often than a wish to start over, so the manager
refuses to start and says what it found and what to do (`FarmFilesWithoutDatabase`):
restore the database from a backup, or point `--data-dir` at an empty folder. There is
no override: whoever really wants a new farm moves the old files away first.

"No database" is: SQLite's file is absent (or has no farmhand tables, as one created
empty by an interrupted start has); PostgreSQL's database has no farmhand tables.

A SQLite file that SQLite cannot read (truncated, overwritten: "database disk image is
malformed") is said in one line too (`unusable_database`), naming the file and what to
do, instead of a traceback from deep inside the first connection; `farmhand users` and
`farmhand backup` say it the same way. So is a database the manager cannot reach or log
in to (PostgreSQL down, a wrong password) and a URL SQLAlchemy cannot use (`postgres://`,
a driver not installed): `cannot use the farmhand database (--database-url): …`, one
home for both commands (`cannot_use_database`), never with the password.

While the manager runs, a database that stops answering for a while (`unavailable`:
PostgreSQL down or unreachable, SQLite locked past its busy timeout or failing with disk
I/O errors) is an outage, not a bug: requests are answered 503 and the reaper does not
count the time against workers (api/errors.py, scheduling/reaper.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine, create_engine, inspect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from farmhand.manager.auth.sessions import KEY_FILE
from farmhand.manager.db.engine import sqlite_file

FARM_FILES = ("admin-token", "runner-token", KEY_FILE)
"""Files only a farm that has started writes."""
FARM_FOLDERS = {
    "blobs": "stored files",
    "logs": "task logs",
    "thumbnails": "thumbnails",
}
"""Folders a farm fills (an empty one is no farm's data: a start may create it)."""
FARM_TABLES = frozenset({"alembic_version", "jobs", "users", "blobs"})
"""Any of these makes a database a farmhand database (migrated, or part-way)."""
RESTORE = "docs/STORAGE.md, 'Backup and restore'"
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
SQLITE_BUSY, SQLITE_IOERR = 5, 10
"""Locked past the busy timeout (a minute: another process holds the write lock), and
the disk under the file failing to read or write: the database is away, not damaged."""
POSTGRES_UNAVAILABLE = frozenset({"53300", "57P01", "57P02", "57P03", "58030"})
"""too_many_connections, admin_shutdown, crash_shutdown, cannot_connect_now (starting or
stopping), io_error; with class 08 (connection_exception)."""


class StartRefused(Exception):
    """The manager must not start; the message is one line for the operator."""


class FarmFilesWithoutDatabase(StartRefused):
    """A data dir with a farm's files, and no database to go with them."""


def farm_files(data_dir: Path, database_file: Path | None = None) -> list[str]:
    """What in `data_dir` only a farm that ran leaves behind, as shown to the operator
    (`stored files (blobs/)`, `admin-token`, …); empty for a new or empty data dir.

    Each folder is walked only until its first file."""
    found = [name for name in FARM_FILES if (data_dir / name).exists()]
    if database_file is not None:
        # A write-ahead log without its database: SQLite would apply it to a new one.
        wal = database_file.with_name(database_file.name + "-wal")
        if wal.exists():
            found.append(wal.name)
    for folder, what in FARM_FOLDERS.items():
        if _holds_a_file(data_dir / folder):
            found.append(f"{what} ({folder}/)")
    return found


def _holds_a_file(folder: Path) -> bool:
    return any(names for _folder, _dirs, names in os.walk(folder))


def has_farm_tables(engine: Engine) -> bool:
    """Whether the database holds farmhand's tables (an empty one does not)."""
    return bool(FARM_TABLES & set(inspect(engine).get_table_names()))


def _refuse(data_dir: Path, found: list[str], no_database: str, restore: str) -> NoReturn:
    raise FarmFilesWithoutDatabase(
        f"{data_dir} holds a farm's files ({', '.join(found)}) but {no_database}. "
        "Starting would make a new, empty farm on them: new tokens in place of the old "
        "ones, and garbage collection would delete every stored file. "
        f"{restore}, or start with --data-dir naming an empty folder for a new farm "
        "(to begin anew in this one, move these files away first)"
    )


def check_sqlite_file(data_dir: Path, database: Path) -> None:
    """Before the database is opened (opening creates it): refuse an absent SQLite file
    in a data dir that holds a farm's files."""
    if database.exists():
        return
    found = farm_files(data_dir, database)
    if found:
        _refuse(
            data_dir,
            found,
            f"no database: {database} does not exist",
            f"Restore the database from a backup ({RESTORE}; a farm whose database is "
            "PostgreSQL starts with --database-url)",
        )


class DatabaseInUse(StartRefused):
    """Another process has the SQLite file open (`opened_elsewhere`)."""


SHM_DMS_BYTE = 128
"""SQLite's "dead man switch" byte in a WAL database's `-shm` file (UNIX_SHM_DMS in
os_unix.c): every connection holds a shared POSIX lock on it for as long as it is open."""


def opened_elsewhere(database: Path) -> int | None:
    """The pid of another process that has `database` open, if one does (None if none,
    or if it cannot be told: not WAL, no `-shm`, a platform without the lock record).

    Asks the kernel who holds SQLite's own lock rather than taking a lock of farmhand's:
    that also sees a manager of an older version, which takes none, and a `farmhand
    users` or a backup reading the file. A lock held by this process never conflicts
    with itself, so in-process reopening is not seen."""
    shm = database.with_name(database.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid.
        asked = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, SHM_DMS_BYTE, 1, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, asked))
    except (OSError, struct.error):
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def check_sqlite_not_in_use(data_dir: Path, database: Path) -> None:
    """Before the database is opened and migrated: refuse a SQLite file another process
    has open. Two managers on one data dir write one database, and an older one still
    serving would write rows its code knows nothing of into the schema this one migrates
    (a blob used by a job left unmarked, new columns left NULL)."""
    pid = opened_elsewhere(database)
    if pid is None:
        return
    who = _process_line(pid)
    raise DatabaseInUse(
        f"the database {database} is open in another process (pid {pid}{who}): another "
        f"manager on the data dir {data_dir}? Stop it first; two managers must not share "
        "one SQLite database (for several, see --processes, or PostgreSQL in docs/DEPLOY.md)"
    )


def _process_line(pid: int) -> str:
    """`: <its command line>` as /proc shows it, cut short; empty if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    line = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return f": {line[:120]}" if line else ""


def check_schema(engine: Engine, data_dir: Path, database: str) -> None:
    """After the database is opened, before it is migrated: refuse one without farmhand
    tables in a data dir that holds a farm's files. `database` names it (a file, or a
    URL without its password)."""
    if has_farm_tables(engine):
        return
    found = farm_files(data_dir)
    if not found:
        return
    if engine.dialect.name == "postgresql":
        restore = (
            "pg_restore the dump taken before the files' backup into it (pg_restore "
            f"--dbname URL DUMPFILE; {RESTORE})"
        )
    else:
        restore = f"Restore the database from a backup ({RESTORE})"
    _refuse(data_dir, found, f"the database {database} has no farmhand tables", restore)


def damaged(error: BaseException) -> bool:
    """Whether SQLite says its file is damaged or not a database (`SQLITE_CORRUPT`,
    `SQLITE_NOTADB`), from SQLAlchemy's error or the driver's own."""
    cause = getattr(error, "orig", None) or error
    code = getattr(cause, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be used just now, rather than that a
    statement or its data is wrong: the connection failed or broke (SQLAlchemy saw a
    disconnect; psycopg's errors with no SQLSTATE are its own connection failures),
    PostgreSQL is shutting down, starting or out of connections, SQLite's file stayed
    locked past the busy timeout or its disk failed. Waiting may mend it; nothing about
    the request does."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    cause = error.orig
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_IOERR)
    if not hasattr(cause, "sqlstate"):  # neither SQLite nor psycopg: not known here
        return False
    state = getattr(cause, "sqlstate", None)
    if not isinstance(state, str):
        return isinstance(error, OperationalError)
    return state.startswith("08") or state in POSTGRES_UNAVAILABLE


def database_reason(error: BaseException, url: str | None = None) -> str:
    """What the database (or its driver) said, on one line (PostgreSQL's reasons span
    several), without the URL's password should the text hold it."""
    reason = " ".join(str(getattr(error, "orig", None) or error).split())
    password = None
    if url is not None:
        try:
            password = make_url(url).password
        except (ArgumentError, ValueError):
            password = None
    if not password:
        return reason
    # The password where it stands alone (`:secret@`, `password=secret`), not inside
    # other words: a password "p" masked every "p" of the reason ("***ort 1 failed").
    alone = rf"(?<![A-Za-z0-9]){re.escape(password)}(?![A-Za-z0-9])"
    return re.sub(alone, "***", reason)


def told_where(database_url: str | None, data_dir: Path) -> str:
    """How a command was told where the database is, as its error lines say it."""
    return "--database-url" if database_url else f"in {data_dir}"


def cannot_use_database(error: BaseException, url: str, where: str) -> str:
    """The one line `farmhand manager` and `farmhand users` print for a database they
    cannot reach, log in to or open a connection to; `where` is how the command was told
    of it (`--database-url`, `in DATA_DIR`)."""
    return f"cannot use the farmhand database ({where}): {database_reason(error, url)}"


def check_database_url(url: str, where: str) -> None:
    """Refuse (`StartRefused`, one line) a URL SQLAlchemy cannot make an engine of: not
    a URL, a database it does not know (`postgres://`, Heroku's spelling, which
    SQLAlchemy dropped), a driver that is not installed. Connects to nothing, writes
    nothing."""
    try:
        create_engine(url).dispose()
    except NoSuchModuleError:
        scheme = url.split(":", 1)[0]
        hint = (
            ": PostgreSQL's URLs begin postgresql+psycopg://"
            if scheme.startswith("postgres")
            else ""
        )
        problem = f"SQLAlchemy knows no database called {scheme!r}{hint}"
    except ImportError as error:
        problem = (
            f"its driver is not installed ({error}); for PostgreSQL: pip install "
            "'farmhand[postgres]' and a postgresql+psycopg:// URL"
        )
    except (ArgumentError, ValueError) as error:
        problem = f"not a database URL ({database_reason(error, url)})"
    else:
        return
    raise StartRefused(f"cannot use the farmhand database ({where}): {problem}")


def unusable_database(error: BaseException, database: str) -> str:
    """One line for an error opening or reading a SQLite database: which file, what
    SQLite said and, for a damaged file, what to do."""
    reason = database_reason(error)
    if damaged(error):
        return (
            f"the database {database} is damaged ({reason}): stop the manager and restore "
            f"the data dir from a backup ({RESTORE}: start the manager on the copy "
            "`farmhand backup` made)"
        )
    return f"the database {database} cannot be used: {reason}"


@contextmanager
def database_errors_said(url: str, where: str) -> Iterator[None]:
    """Turn a database error in the block into `StartRefused`, one line: any SQLite
    error names the file; PostgreSQL's that are about reaching it (refused, down, a
    wrong password, no such database) say `cannot_use_database` (its other errors pass
    through as they are)."""
    database = sqlite_file(url)
    try:
        yield
    except DBAPIError as error:
        if database is not None:
            raise StartRefused(unusable_database(error, str(database))) from error
        if isinstance(error, OperationalError):
            raise StartRefused(cannot_use_database(error, url, where)) from error
        raise
