"""`FARMHAND_LOG_JSON=1`: what a real manager writes is one JSON object a line, for a log
pipeline, including what the libraries under it log (Alembic's database upgrade,
uvicorn's server lines), not only farmhand's own events."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.shared.logconfig import configure_logging

STDLIB_TEXT = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
"""A library's line as the manager wrote it before: `INFO alembic.runtime.migration: …`."""

FIELDS = {"event", "level", "timestamp", "process"}


def manager_lines(tmp_path: Path, *args: str) -> list[str]:
    """Everything a manager started with `args` on a new data dir writes, from its start
    (the database is created and upgraded) to its stop, having answered two requests."""
    with local_farm(tmp_path) as farm:
        manager = farm.start_manager(*args)
        asked(farm)
        farm.stop()
    return manager.log_path.read_text().splitlines()


def asked(farm: LocalFarm) -> None:
    with httpx.Client(base_url=farm.url, timeout=30) as client:
        assert client.get("/api/jobs").status_code == 401
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        assert client.get("/api/jobs", headers=admin).status_code == 200


def events(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON objects among `lines`, each checked for the fields every line has."""
    found = []
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            assert event.keys() >= FIELDS, line
            assert event["process"] == "manager", line
            found.append(event)
    return found


def test_the_database_upgrade_and_the_servers_log_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several processes: each server's uvicorn lines go through farmhand's logging."""
    monkeypatch.setenv("FARMHAND_LOG_JSON", "1")
    lines = manager_lines(tmp_path, "--processes", "2")

    assert [line for line in lines if STDLIB_TEXT.match(line)] == []
    found = events(lines)
    upgrades = [e for e in found if e.get("logger", "").startswith("alembic")]
    assert any(e["event"].startswith("Running upgrade") for e in upgrades), lines
    started = [e for e in found if e["event"] == "Application startup complete."]
    assert [(e["logger"], e["level"]) for e in started] == [("uvicorn.error", "info")] * 2
    assert not [e for e in found if e.get("logger") == "uvicorn.access"], (
        "the manager runs without uvicorn's access log, and still does"
    )


def test_every_line_of_a_manager_is_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARMHAND_LOG_JSON", "1")
    for processes in ("1", "2"):
        lines = manager_lines(tmp_path / processes, "--processes", processes)
        assert len(events(lines)) == len(lines), [x for x in lines if not x.startswith("{")]


def test_library_lines_are_key_value_lines_without_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without JSON, a library's line reads as farmhand's do: fields, not another format."""
    monkeypatch.delenv("FARMHAND_LOG_JSON", raising=False)
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        configure_logging("manager")
        logging.getLogger("alembic.runtime.migration").info("Running upgrade %s -> %s", "1", "2")
        line = capsys.readouterr().err.strip()
    finally:
        root.handlers[:], root.level = before
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
    assert re.search(
        r"\[info +\] Running upgrade 1 -> 2 +\[alembic\.runtime\.migration\] process=manager$",
        line,
    ), line
