"""Argument handling of `farmhand demo`; the demo itself runs in tests/integration."""

from __future__ import annotations

from typer.testing import CliRunner

from farmhand.cli.app import app


def test_demo_rejects_bad_arguments() -> None:
    assert CliRunner().invoke(app, ["demo", "--workers", "0"]).exit_code == 2
    assert CliRunner().invoke(app, ["demo", "--port", "70000"]).exit_code == 2
