"""`{job}` in output names: a job's name as one safe folder, letters of any script kept."""

from __future__ import annotations

import pytest

from farmhand.shared.outputnames import OutputName, render, safe_component
from farmhand.shared.paths import safe_relative_path


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("comp & passes/äö", "comp _ passes_äö"),
        ("ショット 10", "ショット 10"),
        ("Сцена 1", "Сцена 1"),
        ("हिन्दी", "हिन्दी"),  # combining vowel signs are part of the word
        ("u\u0308ber", "über"),  # NFC: one letter, not u and a dropped mark
        ("../..", "_"),
        ("..", "job"),
        ("CON", "_CON"),  # a name paths.py refuses gets a leading _
        ("LPT¹.v2", "_LPT¹.v2"),
    ],
)
def test_a_job_name_becomes_one_safe_folder(name: str, folder: str) -> None:
    assert safe_component(name) == folder
    assert safe_relative_path(folder) == folder


def test_jobs_named_in_other_scripts_get_folders_of_their_own() -> None:
    names = ["ショット", "カット", "Сцена", "Кадр"]  # all one `_` folder before
    paths = {render("{job}/{frame:04d}.{ext}", OutputName(n, 1, 1, "png")) for n in names}
    assert len(paths) == 4, paths


def test_a_long_name_stays_within_a_file_names_bytes() -> None:
    folder = safe_component("日本" * 200)
    assert len(folder.encode()) <= 100
    assert folder.startswith("日本日本")
