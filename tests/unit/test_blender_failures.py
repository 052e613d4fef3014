"""Failure reasons a person can act on: EEVEE without OpenGL says so; EEVEE's sample
progress is read like Cycles'."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.worker.blender.events import DriverError, Progress, parse_progress_line
from farmhand.worker.blender.process import EEVEE_HINT, RenderRequest, _judge, _Outcome


def judge(engine: str | None, code: int | None, tail: list[str], tmp_path: Path) -> str | None:
    seen = _Outcome(engine=engine)
    request = RenderRequest(tmp_path / "a.blend", [1], tmp_path)
    return _judge(request, seen, code, tail).error


def test_eevee_crashing_without_opengl_says_what_to_do(tmp_path: Path) -> None:
    error = judge("BLENDER_EEVEE_NEXT", -11, ["Fra:1 Mem:10M | Syncing"], tmp_path)
    assert error is not None
    assert error.startswith("Blender was killed by signal 11 SIGSEGV")
    assert EEVEE_HINT in error and "Cycles or Workbench" in error


def test_eevee_complaining_about_egl_says_what_to_do(tmp_path: Path) -> None:
    seen = _Outcome(engine="BLENDER_EEVEE")
    seen.errors.append(DriverError("Error: Unable to open a display (EGL)", ""))
    request = RenderRequest(tmp_path / "a.blend", [1], tmp_path)
    error = _judge(request, seen, None, []).error
    assert error is not None and EEVEE_HINT in error


def test_egl_warnings_of_a_working_eevee_do_not_mislead(tmp_path: Path) -> None:
    """Blender 5 logs EGL errors even when EEVEE renders: a missing camera stays that."""
    seen = _Outcome(engine="BLENDER_EEVEE")
    seen.errors.append(DriverError("Error: Cannot render, no camera", ""))
    request = RenderRequest(tmp_path / "a.blend", [1], tmp_path)
    error = _judge(request, seen, None, ["EGL Error (0x3009): EGL_BAD_MATCH"]).error
    assert error == "Error: Cannot render, no camera"


@pytest.mark.parametrize(
    ("engine", "code"), [("CYCLES", -11), ("BLENDER_EEVEE", -9), ("BLENDER_WORKBENCH", 1)]
)
def test_other_failures_get_no_opengl_hint(engine: str, code: int, tmp_path: Path) -> None:
    """A Cycles crash is not an OpenGL problem, and SIGKILL is memory."""
    error = judge(engine, code, ["EGL Error (0x3009)"] if code == -9 else [], tmp_path)
    assert error is not None and EEVEE_HINT not in error


def test_eevee_sample_progress_is_read() -> None:
    line = "Fra:7 Mem:10.51M (Peak 11.61M) | Time:00:12.46 | Rendering 26 / 64 samples"
    assert parse_progress_line(line) == Progress(7, 26, 64)
