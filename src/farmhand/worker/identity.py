"""The runner's identity on disk, so a restarted worker is the same worker.

Registering hands out a secret that the manager shows only once. Keeping it in
`<work-dir>/identity.json` (mode 0600: it is a credential) means a restart reuses the
worker id, its history and its blocklist entries instead of creating a new runner.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from farmhand.shared.filelock import try_lock

IDENTITY_FILE = "identity.json"


@dataclass(frozen=True)
class Identity:
    manager_url: str
    worker_id: int
    name: str
    secret: str

    def matches(self, manager_url: str, name: str) -> bool:
        """Only reuse an identity for the same manager and the same worker name."""
        return self.manager_url.rstrip("/") == manager_url.rstrip("/") and self.name == name


def identity_path(work_dir: Path) -> Path:
    return work_dir / IDENTITY_FILE


def load_identity(work_dir: Path) -> Identity | None:
    """The stored identity, or None if there is none or it is unreadable."""
    try:
        raw = json.loads(identity_path(work_dir).read_text(encoding="utf-8"))
        return Identity(
            manager_url=str(raw["manager_url"]),
            worker_id=int(raw["worker_id"]),
            name=str(raw["name"]),
            secret=str(raw["secret"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_identity(work_dir: Path, identity: Identity) -> Path:
    """Write the identity atomically, readable by this user only."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = identity_path(work_dir)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(identity), handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def forget_identity(work_dir: Path) -> None:
    identity_path(work_dir).unlink(missing_ok=True)


LOCK_FILE = "worker.lock"


WORK_FOLDERS = ("cache", "cache/tmp", "jobs", "logs", "outbox", "outputs")
"""The work dir's folders a worker writes to: checked at start (`check_work_dir`)."""


class WorkDirError(Exception):
    """The work dir cannot be used: said at start in one line, not at the first task."""


class WorkDirInUse(WorkDirError):
    """Another worker process holds this work dir (and so this identity)."""


def check_work_dir(work_dir: Path) -> None:
    """Make the work dir's folders and write a file in each, or raise WorkDirError.

    A folder the worker cannot write (a read-only mount, another user's, a full disk)
    would otherwise surface mid-task, failing or giving back task after task; at start
    it is one line for the operator.
    """
    for name in ("", *WORK_FOLDERS):
        folder = work_dir / name
        probe = folder / f".farmhand-probe-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"farmhand")
            probe.unlink()
        except OSError as exc:
            raise WorkDirError(
                f"cannot write to the work dir's folder {folder}: {exc.strerror or exc}; "
                "give the worker a writable --work-dir"
            ) from exc


@contextmanager
def holding_work_dir(work_dir: Path) -> Iterator[None]:
    """Hold `<work-dir>/worker.lock` exclusively for the block (the worker's life).

    A work dir is one runner: two processes on it would both render as that runner (every
    task twice, the runner's row showing whichever spoke last) and share one cache and
    outbox. The second process is refused, naming the first's pid. The lock is the
    operating system's (flock, or msvcrt on Windows), so a killed worker leaves none
    behind; the pid in the file is only for the message.
    """
    path = work_dir / LOCK_FILE
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise WorkDirError(
            f"cannot use the work dir {work_dir}: {exc.strerror or exc} ({path}); give the "
            "worker a writable --work-dir"
        ) from exc
    try:
        if not try_lock(fd):
            holder = _read_pid(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise WorkDirInUse(
                f"another worker{who} is running on the work dir {work_dir}: one work dir "
                "is one runner; give each worker its own --work-dir (and --name)"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_pid(fd: int) -> str:
    """The pid the lock's holder wrote, or "" (not written yet, or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
