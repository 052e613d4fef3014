"""A manager refused at start for its database leaves the data dir as it found it.

Before: `farmhand manager --database-url postgresql+psycopg://…` with PostgreSQL down
said so in one line, but left `blobs/sha256/` behind in the data dir (and the data dir
itself, had it not existed): the blob store was made before the database was asked.
An operator then found a farm's folders on a farm that never started, and a later
start on the right database saw a data dir that looked used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.cli.app import app
from tests.unit.test_cli_errors import one_error_line, runner

UNREACHABLE = "postgresql+psycopg://farmhand@127.0.0.1:1/farm"  # port 1: refused


pytestmark = pytest.mark.usefixtures("no_manager_env")  # conftest.py


def _start(data: Path) -> str:
    result = runner.invoke(
        app, ["manager", "--port", "9", "--data-dir", str(data), "--database-url", UNREACHABLE]
    )
    return one_error_line(result)


def _everything_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_an_unreachable_postgres_leaves_an_existing_data_dir_as_it_was(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("the operator's own file\n")
    line = _start(data)
    assert line.startswith(
        "error: cannot use the farmhand database (--database-url): connection failed: "
    ), line
    assert _everything_in(data) == ["notes.txt"], "nothing new in the data dir"


@pytest.mark.parametrize("where", ["data", "new/farm/data"], ids=["folder", "nested"])
def test_an_unreachable_postgres_makes_no_data_dir(tmp_path: Path, where: str) -> None:
    """Nor the folders above it that this start made (`--data-dir new/farm/data`)."""
    data = tmp_path / where
    line = _start(data)
    assert "cannot use the farmhand database" in line, line
    assert _everything_in(tmp_path) == [], "no folder left behind"
