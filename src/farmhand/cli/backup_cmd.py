"""`farmhand backup DEST`: a copy of the manager's data dir, safe while the manager runs.

The work is in `farmhand.manager.storage.backup` (its docstring says what is copied and
why in that order); this is the command around it: options, a progress bar over the
blobs, the summary, exit codes. It opens the data dir directly (like `farmhand users`),
so it runs on the manager's machine, as a user who can read the data dir.

Exit codes: 0 a complete backup; 1 refused (nothing written), stopped part-way, or
written with missing or corrupt blobs (each said on stderr).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from farmhand.cli.admin_cmd import human
from farmhand.cli.progress import transfer_progress
from farmhand.cli.shown import shown
from farmhand.cli.users_cmd import DatabaseUrl, DataDir

if TYPE_CHECKING:  # imported when the command runs: SQLAlchemy is slow to import
    from farmhand.manager.storage.backup import BackupReport

console = Console()
errors = Console(stderr=True)
SHOWN = 5
"""Hashes named in a report of missing or corrupt blobs (the count says the rest)."""


class _Bar:
    """The blobs' progress (bytes) as a Rich bar on stderr, gone once done."""

    def __init__(self) -> None:
        self.progress = transfer_progress(errors)
        self.task = self.progress.add_task("blobs", total=None)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def start(self, blobs: int, total_bytes: int) -> None:
        self.progress.update(self.task, description=f"{blobs} blobs", total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self.progress.advance(self.task, nbytes)


def _hashes(hashes: list[str]) -> str:
    more = f" and {len(hashes) - SHOWN} more" if len(hashes) > SHOWN else ""
    return ", ".join(hashes[:SHOWN]) + more


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _summary(report: BackupReport, database_url: str) -> None:
    blobs = report.blobs
    how = f"{blobs.linked} hard-linked, {blobs.copied} copied" if blobs.linked else "copied"
    logs = sum(1 for name in report.files if name.startswith("logs/"))
    secrets = [name for name in report.files if not name.startswith("logs/")]
    jobs = "" if report.jobs is None else f"{_count(report.jobs, 'job')}, "
    done = "Backed up to" if report.ok else "Backup INCOMPLETE (errors below), written to"
    console.print(
        f"{done} {shown(str(report.dest))} in {report.seconds:.1f} s: {jobs}"
        f"{_count(blobs.linked + blobs.copied, 'blob')} ({human(blobs.bytes)}, {how}), "
        f"{_count(logs, 'task log')}, {', '.join(secrets) or 'no token files'}.",
        highlight=False,
    )
    if not report.database_copied:
        console.print(
            "The database is not in this backup: keep it with the pg_dump taken before.",
            highlight=False,
        )
    if blobs.dropped:
        console.print(
            f"The copy forgets {len(blobs.dropped)} blobs no job uses that it could not "
            "copy (garbage collection removed them during the backup, or they are damaged).",
            highlight=False,
        )
    if report.ok:
        # One line whatever the terminal's width: its commands are for copying.
        console.print(_restore_hint(report, database_url), highlight=False, soft_wrap=True)


def _restore_hint(report: BackupReport, database_url: str) -> str:
    """How to restore this backup, as a command an operator may run as printed.

    A files-only copy has no database: started without `--database-url` a manager would
    look for SQLite in it (and refuse: a farm's files without their database)."""
    dest = shown(str(report.dest))
    if report.database_copied:
        return (
            f"Restore: stop the manager, then start it on the copy (farmhand manager "
            f"--data-dir {dest}), or put the copy where the data dir was."
        )
    from sqlalchemy import make_url

    url = make_url(database_url)
    libpq = url.set(drivername=url.get_backend_name())  # pg_restore knows no +psycopg
    password = " (*** is the database's password)" if url.password else ""
    return (
        "Restore: stop the manager, restore the pg_dump taken just before this backup into "
        "the database, then start the manager on the copy with that database (without "
        f"--database-url it finds no database in the copy and refuses to start){password}:\n"
        f"  pg_restore --clean --if-exists --dbname "
        f"{shown(libpq.render_as_string(hide_password=True))} DUMPFILE\n"
        f"  farmhand manager --data-dir {dest} "
        f"--database-url {shown(url.render_as_string(hide_password=True))}"
    )


def backup(
    dest: Annotated[
        Path,
        typer.Argument(
            help="A new or empty directory: the copy, a data dir a manager can start on."
        ),
    ],
    data_dir: DataDir = Path("farmhand-data"),
    database_url: DatabaseUrl = None,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Hard-link blobs instead of copying them when DEST is on the same "
            "filesystem: a quick snapshot, not a copy on another disk.",
        ),
    ] = False,
    files_only: Annotated[
        bool,
        typer.Option(
            "--files-only",
            help="For PostgreSQL: copy blobs, logs and tokens only. Run pg_dump first.",
        ),
    ] = False,
) -> None:
    """Back up the manager's data dir, safe while the manager runs.

    The database first (a consistent snapshot), then the blobs it names, the task logs
    and the tokens."""
    from farmhand.manager.settings import ManagerSettings, SettingsError
    from farmhand.manager.storage import backup as backups

    try:
        settings = ManagerSettings.from_env(data_dir=data_dir, database_url=database_url)
    except SettingsError as error:  # a FARMHAND_* variable out of range: one line
        errors.print(f"[red]error:[/] {shown(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if files_only:
        errors.print(
            "[yellow]note:[/] the database is not copied: it must have been dumped "
            "(pg_dump) before this command, so the copy holds every blob the dump names.",
            highlight=False,
        )
    try:
        with _Bar() as bar:
            report = backups.backup(
                settings.data_dir,
                settings.resolved_database_url,
                dest,
                link=link,
                files_only=files_only,
                progress=bar,
            )
    except backups.BackupRefused as error:
        errors.print(f"[red]error:[/] {shown(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    except (backups.BackupFailed, OSError) as error:
        errors.print(
            f"[red]error:[/] backup failed: {shown(str(error))}\n"
            f"{shown(str(dest))} is incomplete: remove it.",
            highlight=False,
        )
        raise typer.Exit(1) from error
    _summary(report, settings.resolved_database_url)
    if report.blobs.missing:
        errors.print(
            f"[red]error:[/] {len(report.blobs.missing)} blobs the database names are not in "
            f"the store: {_hashes(report.blobs.missing)}. The copy names them and lacks them. "
            "A job deleted with purge during the backup removes its blobs at once: run the "
            "backup again; if they are still missing, the store has lost them.",
            highlight=False,
        )
    if report.blobs.corrupt:
        errors.print(
            f"[red]error:[/] {len(report.blobs.corrupt)} blobs in the store do not match their "
            f"hash (damaged on disk), left out of the copy: {_hashes(report.blobs.corrupt)}.",
            highlight=False,
        )
    if not report.ok:
        raise typer.Exit(1)
