"""The runner's identity on disk, so a restarted worker is the same worker.

Registering hands out a secret that the manager shows only once. Keeping it in
`<work-dir>/identity.json` (mode 0600: it is a credential) means a restart reuses the
worker id, its history and its blocklist entries instead of creating a new runner.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

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
