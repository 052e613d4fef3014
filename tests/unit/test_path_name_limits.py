"""File names a runner or a user sends that no worker's disk can hold (to go with the
paths.py patch: a name over 255 bytes, Windows' superscript-digit ports)."""

from __future__ import annotations

import pytest

from farmhand.shared.outputnames import OutputName, TemplateError, render
from farmhand.shared.paths import UnsafePathError, safe_relative_path


@pytest.mark.parametrize("name", ["LPT¹.png", "com².exr", "passes/COM³/x.png", "CONOUT$.txt"])
def test_windows_superscript_ports_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError, match="Windows reserves"):
        safe_relative_path(name)


def test_a_component_over_255_utf8_bytes_is_refused_though_under_255_characters() -> None:
    name = "é" * 128 + ".png"  # 132 characters, 260 bytes
    with pytest.raises(UnsafePathError, match="255 bytes"):
        safe_relative_path(f"passes/{name}")
    with pytest.raises(UnsafePathError, match="255 bytes"):
        safe_relative_path("passes/" + "a" * 304 + ".png")


def test_255_bytes_and_ordinary_names_still_pass() -> None:
    assert safe_relative_path("a" * 251 + ".png") == "a" * 251 + ".png"
    assert safe_relative_path("passes/LPT10.png") == "passes/LPT10.png"
    assert safe_relative_path("passes/COMPOSITE.png") == "passes/COMPOSITE.png"


def test_an_output_template_naming_a_too_long_file_is_refused() -> None:
    with pytest.raises(TemplateError, match="255 bytes"):
        render("é" * 130 + "{frame}.{ext}", OutputName("job", 1, 1, "png"))
