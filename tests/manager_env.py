"""`farmhand manager` run in the test's own process (`CliRunner`), kept from the shell's
manager and from serving: for tests of how it refuses to start (unit and integration)."""

from __future__ import annotations

import pytest
import uvicorn

from farmhand.cli import manager_cmd

MANAGER_ENV = ("DATA_DIR", "DATABASE_URL", "ADMIN_TOKEN", "RUNNER_TOKEN")
"""The `FARMHAND_` variables that would point a test's manager at the shell's."""


def clear_manager_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options under test, not whatever manager this shell points at."""
    for name in MANAGER_ENV:
        monkeypatch.delenv(f"FARMHAND_{name}", raising=False)


def forbid_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """A manager that gets as far as serving fails the test instead of blocking it; its
    logging stays as the tests have it."""

    def serve(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the manager started")

    monkeypatch.setattr(uvicorn, "run", serve)
    monkeypatch.setattr(manager_cmd, "configure_logging", lambda *_, **__: None)
