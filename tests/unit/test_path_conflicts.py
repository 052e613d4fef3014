"""`check_coexisting`: which sets of job paths can all be files on any worker's disk."""

from __future__ import annotations

import unicodedata

import pytest

from farmhand.shared.paths import PathConflict, UnsafePathError, check_coexisting


@pytest.mark.parametrize(
    "paths",
    [
        ["scene.blend"],
        ["a/scene.blend", "a/tex/wood.png", "b/scene.blend", "a.blend"],
        ["a/x.png", "A/y.png"],  # one folder on Windows, two on Linux: either way fine
        ["ab/c.png", "a/b.png", "a.b/c.png"],  # prefixes of names, not of folders
        [f"seq/{n:05d}.png" for n in range(2000)],
    ],
)
def test_paths_that_can_be_one_tree_pass(paths: list[str]) -> None:
    check_coexisting(paths)


@pytest.mark.parametrize(
    ("paths", "first", "second", "said"),
    [
        (["a/tiny.blend", "a"], "a", "a/tiny.blend", "'a' would be a file and a folder"),
        (["a", "a/tiny.blend"], "a", "a/tiny.blend", "'a' would be a file and a folder"),
        (
            ["tiny.blend", "tiny.blend/evil.png"],
            "tiny.blend",
            "tiny.blend/evil.png",
            "'tiny.blend' would be a file and a folder",
        ),
        (["x/a", "x/a/b/c.png"], "x/a", "x/a/b/c.png", "'x/a' would be a file and a folder"),
        (["A", "a/s.blend"], "A", "a/s.blend", "'a' would be a file and a folder"),
        (["s.blend", "S.blend"], "s.blend", "S.blend", "differ only in case"),
        (["tex/Wood.PNG", "TEX/wood.png"], "tex/Wood.PNG", "TEX/wood.png", "differ only in case"),
        (
            [unicodedata.normalize("NFC", "café.png"), unicodedata.normalize("NFD", "café.png")],
            unicodedata.normalize("NFC", "café.png"),
            unicodedata.normalize("NFD", "café.png"),
            "differ only in case",
        ),
        (["a.png", "a.png"], "a.png", "a.png", "appears twice"),
    ],
)
def test_paths_that_collide_on_a_worker_are_both_named(
    paths: list[str], first: str, second: str, said: str
) -> None:
    with pytest.raises(PathConflict) as raised:
        check_coexisting(paths)
    assert {raised.value.first, raised.value.second} == {first, second}
    message = str(raised.value)
    assert repr(first) in message and repr(second) in message and said in message, message


def test_a_conflict_is_an_unsafe_path_for_callers_that_catch_those() -> None:
    with pytest.raises(UnsafePathError):
        check_coexisting(["a", "a/b"])
