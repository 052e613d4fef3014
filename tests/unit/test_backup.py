"""`farmhand backup DEST` on a data dir made here: a real SQLite database (the manager's
own migrations), a real blob store, token files, logs, and what must stay behind.

The running-manager case (writes during the backup, a second manager on the copy) is
tests/integration/test_backup.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmhand.cli.app import app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import Blob, BlobUpload, Job, JobFile, User
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage.blobs import BlobStore

runner = CliRunner()
SECRETS = ("admin-token", "runner-token", "session-key")


@pytest.fixture(autouse=True)
def _no_manager_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options under test, not whatever manager this shell points at."""
    monkeypatch.delenv("FARMHAND_DATA_DIR", raising=False)
    monkeypatch.delenv("FARMHAND_DATABASE_URL", raising=False)


@dataclass
class Source:
    data: Path
    inputs: dict[str, str]
    """Job file path → its blob's hash."""
    unreferenced: str
    """A blob with a row and a file that no job uses."""

    def blob(self, sha256: str) -> Path:
        return self.data / "blobs" / "sha256" / sha256[:2] / sha256[2:]


def _secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


@pytest.fixture
def source(tmp_path: Path) -> Source:
    """A data dir as a manager leaves it: one job with three inputs, an unused blob,
    tokens, a task log, and the things a backup leaves out (staging, caches, sockets)."""
    data = tmp_path / "data"
    data.mkdir()
    db = Database(ManagerSettings(data_dir=data).resolved_database_url)
    store = BlobStore(data / "blobs")
    inputs: dict[str, str] = {}
    try:
        upgrade(db.engine)
        now = utcnow()
        with db.transaction() as session:
            user = User(name="admin", role="admin", created_at=now)
            session.add(user)
            session.flush()
            job = Job(
                owner_id=user.id, name="shot", settings={}, main_file="scene.blend", created_at=now
            )
            session.add(job)
            session.flush()
            for path in ("scene.blend", "tex/wood.png", "tex/stone.png"):
                stored = store.ingest_file(io.BytesIO(f"bytes of {path}".encode() * 1000))
                session.add(Blob(sha256=stored.sha256, size=stored.size, created_at=now))
                session.add(
                    JobFile(job_id=job.id, kind="input", path=path, sha256=stored.sha256,
                            size=stored.size, created_at=now)
                )  # fmt: skip
                inputs[path] = stored.sha256
            spare = store.ingest_file(io.BytesIO(b"an old upload nobody used"))
            session.add(Blob(sha256=spare.sha256, size=spare.size, created_at=now))
            session.flush()
            session.add(BlobUpload(sha256=spare.sha256, user_id=user.id, uploaded_at=now))
    finally:
        db.dispose()
    for name in SECRETS:
        _secret(data / name, f"secret {name}")
    (data / "logs" / "job-1").mkdir(parents=True)
    (data / "logs" / "job-1" / "task-1.log").write_text("rendering frame 1\n")
    (data / "thumbnails").mkdir()
    (data / "thumbnails" / "1-1.jpg").write_bytes(b"jpeg")
    (data / "run").mkdir()
    (data / "run" / "manager.sock").write_bytes(b"")
    (data / "blobs" / "tmp" / "partial").mkdir(parents=True, exist_ok=True)
    (data / "blobs" / "tmp" / "partial" / "upload-1").write_bytes(b"half an upload")
    (data / "farmhand.sqlite3.writelock").write_bytes(b"")
    return Source(data, inputs, spare.sha256)


def _backup(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["backup", *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_backup_holds_the_database_blobs_logs_and_tokens_and_nothing_else(
    source: Source, tmp_path: Path
) -> None:
    dest = tmp_path / "backup"
    code, output = _backup(str(dest), "--data-dir", str(source.data))
    assert code == 0, output
    assert "1 job, 4 blobs" in output and "Restore:" in output
    blobs = [
        f"blobs/sha256/{sha[:2]}/{sha[2:]}"
        for sha in [*source.inputs.values(), source.unreferenced]
    ]
    assert _files(dest) == sorted(
        ["farmhand.sqlite3", "logs/job-1/task-1.log", *SECRETS, *blobs]
    )  # no thumbnails/, run/, blobs/tmp/, writelock, -wal or -shm
    for blob in blobs:
        copy, original = dest / blob, source.data / blob
        assert copy.read_bytes() == original.read_bytes()
        assert os.stat(copy).st_ino != os.stat(original).st_ino  # a copy, not a link
        assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(original.stat().st_mode)
        assert copy.stat().st_mtime_ns == original.stat().st_mtime_ns  # rsync -a sees no change
    for name in SECRETS:
        assert (dest / name).read_text() == f"secret {name}\n"
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o600
    assert (dest / "logs/job-1/task-1.log").read_text() == "rendering frame 1\n"
    with contextlib.closing(sqlite3.connect(dest / "farmhand.sqlite3")) as copied:
        assert copied.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(copied.execute("SELECT path, sha256 FROM job_files"))
    assert rows == source.inputs


@pytest.mark.parametrize("dest_kind", ["file", "non-empty", "inside the data dir"])
def test_a_dest_that_is_not_new_or_empty_is_refused_and_nothing_is_written(
    source: Source, tmp_path: Path, dest_kind: str
) -> None:
    dest = tmp_path / "backup"
    if dest_kind == "file":
        dest.write_text("mine")
    elif dest_kind == "non-empty":
        dest.mkdir()
        (dest / "older-backup.txt").write_text("mine")
    else:
        dest = source.data / "backup"
    before = _files(tmp_path)
    code, output = _backup(str(dest), "--data-dir", str(source.data))
    assert code == 1
    assert "error:" in output
    assert _files(tmp_path) == before
    if dest_kind == "inside the data dir":
        assert not dest.exists()


def test_no_database_at_the_data_dir_is_refused_without_creating_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = _backup(str(tmp_path / "backup"), "--data-dir", str(empty))
    assert code == 1 and "no manager database" in output
    assert not (empty / "farmhand.sqlite3").exists()
    assert not (tmp_path / "backup").exists()


def test_a_referenced_blob_missing_from_the_store_fails_the_backup_but_the_rest_is_written(
    source: Source, tmp_path: Path
) -> None:
    lost = source.inputs["tex/wood.png"]
    source.blob(lost).unlink()
    dest = tmp_path / "backup"
    code, output = _backup(str(dest), "--data-dir", str(source.data))
    assert code == 1
    assert "1 blobs the database names are not in the store" in output
    assert lost in output
    for path, sha in source.inputs.items():
        assert (dest / "blobs/sha256" / sha[:2] / sha[2:]).exists() == (path != "tex/wood.png")
    assert (dest / "farmhand.sqlite3").exists() and (dest / "logs/job-1/task-1.log").exists()
    assert all((dest / name).exists() for name in SECRETS)


def test_a_corrupt_blob_is_reported_and_left_out(source: Source, tmp_path: Path) -> None:
    damaged = source.inputs["scene.blend"]
    path = source.blob(damaged)
    path.write_bytes(path.read_bytes()[:-1] + b"!")  # one byte flipped on disk
    dest = tmp_path / "backup"
    code, output = _backup(str(dest), "--data-dir", str(source.data))
    assert code == 1
    assert "1 blobs in the store do not match their hash" in output and damaged in output
    assert not (dest / "blobs/sha256" / damaged[:2] / damaged[2:]).exists()
    assert _files(dest / "blobs/sha256/") == sorted(
        f"{sha[:2]}/{sha[2:]}" for sha in [source.unreferenced, *source.inputs.values()]
        if sha != damaged
    )  # fmt: skip
    assert not [p for p in dest.rglob("*.partial")]


def test_an_unused_blob_gone_from_the_store_is_forgotten_by_the_copy(
    source: Source, tmp_path: Path
) -> None:
    """Garbage collection removing an unused blob after the snapshot is no failure, but
    the copy must not claim a blob it lacks (clients would be told not to upload it)."""
    source.blob(source.unreferenced).unlink()
    dest = tmp_path / "backup"
    code, output = _backup(str(dest), "--data-dir", str(source.data))
    assert code == 0, output
    with contextlib.closing(sqlite3.connect(dest / "farmhand.sqlite3")) as copy:
        known = {row[0] for row in copy.execute("SELECT sha256 FROM blobs")}
        uploads = copy.execute("SELECT sha256 FROM blob_uploads").fetchall()
        dangling = copy.execute("PRAGMA foreign_key_check").fetchall()
    assert known == set(source.inputs.values())
    assert uploads == [] and dangling == [], "who uploaded it goes with it"


def test_link_hard_links_the_blobs(source: Source, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    code, output = _backup(str(dest), "--data-dir", str(source.data), "--link")
    assert code == 0, output
    assert "4 hard-linked" in output
    for sha in [*source.inputs.values(), source.unreferenced]:
        relative = Path("blobs/sha256") / sha[:2] / sha[2:]
        assert os.stat(dest / relative).st_ino == os.stat(source.data / relative).st_ino
    assert os.stat(dest / "admin-token").st_ino != os.stat(source.data / "admin-token").st_ino


def test_link_does_not_link_a_corrupt_blob(source: Source, tmp_path: Path) -> None:
    damaged = source.inputs["tex/stone.png"]
    source.blob(damaged).write_bytes(b"not what the name says")
    code, output = _backup(str(tmp_path / "backup"), "--data-dir", str(source.data), "--link")
    assert code == 1 and damaged in output
    assert not (tmp_path / "backup/blobs/sha256" / damaged[:2] / damaged[2:]).exists()


def test_postgresql_is_refused_without_files_only_and_the_password_is_not_shown(
    source: Source, tmp_path: Path
) -> None:
    url = "postgresql+psycopg://farm:hunter2@db.example/farm"
    dest = tmp_path / "backup"
    code, output = _backup(str(dest), "--data-dir", str(source.data), "--database-url", url)
    assert code == 1
    assert "pg_dump FIRST" in output and "--files-only" in output
    assert "hunter2" not in output
    assert not dest.exists()


def test_files_only_copies_every_blob_logs_and_tokens_but_no_database(
    source: Source, tmp_path: Path
) -> None:
    url = "postgresql+psycopg://farm@db.example/farm"
    stray = BlobStore(source.data / "blobs").ingest_file(io.BytesIO(b"in the store, no row here"))
    dest = tmp_path / "backup"
    code, output = _backup(
        str(dest), "--data-dir", str(source.data), "--database-url", url, "--files-only"
    )
    assert code == 0, output
    assert "pg_dump" in output
    assert not (dest / "farmhand.sqlite3").exists()
    for sha in [*source.inputs.values(), source.unreferenced, stray.sha256]:
        assert _sha256(dest / "blobs/sha256" / sha[:2] / sha[2:]) == sha
    assert all(stat.S_IMODE((dest / name).stat().st_mode) == 0o600 for name in SECRETS)


def test_files_only_says_to_restore_the_dump_and_start_with_the_database_url(
    source: Source, tmp_path: Path
) -> None:
    """The restore hint of a copy without its database: run as printed before, `farmhand
    manager --data-dir DEST` started a new SQLite farm on the copy."""
    url = "postgresql+psycopg://farm:hunter2@db.example:5433/farm"
    dest = tmp_path / "backup"
    code, output = _backup(
        str(dest), "--data-dir", str(source.data), "--database-url", url, "--files-only"
    )
    assert code == 0, output
    hint = output[output.index("Restore:") :].splitlines()
    assert "restore the pg_dump" in hint[0] and "--database-url" in hint[0], hint
    assert "(*** is the database's password)" in hint[0], hint
    assert hint[1:3] == [
        "  pg_restore --clean --if-exists --dbname postgresql://farm:***@db.example:5433/farm "
        "DUMPFILE",
        f"  farmhand manager --data-dir {dest} --database-url "
        "postgresql+psycopg://farm:***@db.example:5433/farm",
    ], hint
    assert "hunter2" not in output


def test_files_only_is_refused_for_sqlite(source: Source, tmp_path: Path) -> None:
    code, output = _backup(str(tmp_path / "backup"), "--data-dir", str(source.data), "--files-only")
    assert code == 1 and "--files-only is for a database that is not SQLite" in output
    assert not (tmp_path / "backup").exists()


def test_the_copy_keeps_the_database_and_logs_private_even_if_the_source_did_not(
    source: Source, tmp_path: Path
) -> None:
    """The copy holds the password hashes and the task logs: 0600 (in 0700 folders),
    also when an older version left the originals readable to every account."""
    previous = os.umask(0o022)
    try:
        os.chmod(source.data / "farmhand.sqlite3", 0o644)
        os.chmod(source.data / "logs" / "job-1" / "task-1.log", 0o644)
        dest = tmp_path / "backup"
        code, output = _backup(str(dest), "--data-dir", str(source.data))
    finally:
        os.umask(previous)
    assert code == 0, output
    assert stat.S_IMODE((dest / "farmhand.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "logs/job-1/task-1.log").stat().st_mode) == 0o600
    for folder in ("logs", "logs/job-1"):
        assert stat.S_IMODE((dest / folder).stat().st_mode) == 0o700, folder
