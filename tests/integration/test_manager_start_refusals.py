"""`farmhand manager` refuses to start, in one line, on a database or a folder it cannot
use, rather than with a traceback or by starting and failing the first request.

Before: PostgreSQL down (or a wrong password) was a ~520-line traceback, a `postgres://`
URL 106 lines ending in `NoSuchModuleError`; `blobs/` made unwritable inside a writable
data dir started normally, and the first upload was a `500` with a `PermissionError`.
`farmhand users` says a database it cannot use the same way (one home,
`db.presence.cannot_use_database`), and never prints the password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from farmhand.cli.app import app
from farmhand.localfarm import free_port
from farmhand.manager.app import prepare
from farmhand.manager.settings import ManagerSettings
from tests.integration.postgres import postgres_bin, postgres_server
from tests.unit.test_cli_errors import one_error_line, runner

PASSWORD = "pw-s3cret"


pytestmark = pytest.mark.usefixtures("no_manager_env")  # conftest.py


def _start(data: Path, *args: str) -> str:
    return one_error_line(
        runner.invoke(app, ["manager", "--port", "9", "--data-dir", str(data), *args])
    )


def _users(data: Path, *args: str) -> str:
    return one_error_line(runner.invoke(app, ["users", "list", "--data-dir", str(data), *args]))


def test_postgres_not_listening_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://farmhand:{PASSWORD}@127.0.0.1:{free_port()}/farm"
    for line in (
        _start(tmp_path / "data", "--database-url", url),
        _users(tmp_path, "--database-url", url),
    ):
        assert line.startswith(
            "error: cannot use the farmhand database (--database-url): connection failed: "
        ), line
        assert "Connection refused" in line and PASSWORD not in line, line


@pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed")
def test_a_postgres_database_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    with postgres_server() as server:
        url = make_url(server).set(database="no_such_farm", password=PASSWORD)
        line = _start(tmp_path / "data", "--database-url", url.render_as_string(False))
    assert line.startswith("error: cannot use the farmhand database (--database-url): "), line
    assert 'database "no_such_farm" does not exist' in line and PASSWORD not in line, line


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            f"postgres://farmhand:{PASSWORD}@db.example/farm",
            "SQLAlchemy knows no database called 'postgres': PostgreSQL's URLs begin "
            "postgresql+psycopg://",
        ),
        (f"postgresql://farmhand:{PASSWORD}@db.example:five/farm", "not a database URL ("),
        (f"mysql://farmhand:{PASSWORD}@db.example/farm", "its driver is not installed ("),
    ],
    ids=["postgres-scheme", "bad-port", "no-driver"],
)
def test_a_database_url_sqlalchemy_cannot_use_is_one_line(
    tmp_path: Path, url: str, said: str
) -> None:
    data = tmp_path / "data"
    for line in (_start(data, "--database-url", url), _users(tmp_path, "--database-url", url)):
        assert line.startswith(
            f"error: cannot use the farmhand database (--database-url): {said}"
        ), line
        assert PASSWORD not in line, line
    assert not data.exists(), "nothing is written before the refusal"


@pytest.mark.parametrize("folder", ["blobs/tmp", "blobs/tmp/partial", "logs", "thumbnails"])
def test_a_folder_the_manager_writes_into_that_is_a_file_is_refused_at_start(
    tmp_path: Path, folder: str
) -> None:
    """A file where the folder should be, in the data dir of a farm that ran, stops
    writes as root too (where permission bits do not): the start is refused naming it,
    rather than the first upload, task log or thumbnail failing."""
    data = tmp_path / "data"
    context, _ = prepare(ManagerSettings(data_dir=data))
    context.db.dispose()
    shutil.rmtree(data / folder, ignore_errors=True)
    (data / folder).parent.mkdir(parents=True, exist_ok=True)
    (data / folder).write_bytes(b"")
    line = _start(data)
    assert line == (
        f"error: the data dir cannot be used: cannot write to the folder {data / folder}: "
        "it is not a folder"
    ), line


def _without_override() -> list[str] | None:
    """How to run a command that permission bits stop: as it is for another user than
    root; as root, without the capabilities that override them (setpriv); None if
    neither can be done here."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", "--"]


def test_an_unwritable_blob_store_in_a_writable_data_dir_is_refused_at_start(
    tmp_path: Path,
) -> None:
    """QA's case: a data dir whose `blobs/` (made by an earlier start) is read-only."""
    prefix = _without_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits stop nothing")
    data = tmp_path / "data"
    (data / "blobs" / "sha256").mkdir(parents=True)
    (data / "blobs").chmod(0o555)
    farmhand = Path(sys.executable).with_name("farmhand")
    try:
        done = subprocess.run(
            [
                *prefix,
                str(farmhand),
                "manager",
                "--data-dir",
                str(data),
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "FARMHAND_DATABASE_URL": ""},
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the manager started: still running after 30 s") from None
    finally:
        (data / "blobs").chmod(0o755)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0] == (
        f"error: the data dir cannot be used: cannot write to the folder {data / 'blobs'}: "
        "permission denied"
    ), lines
