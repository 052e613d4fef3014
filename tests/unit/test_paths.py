import pytest

from farmhand.shared.paths import UnsafePathError, safe_file_name, safe_relative_path


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "C:\\Windows\\x.blend",
        "C:/x.blend",
        "a\\..\\b",
        "",
        "a/\x00b",
        "a/ ",
        "//server/share/x.png",
        "textures\\wood.png",
        "tex/\nwood.png",
        "CON",
        "textures/aux.png",
        "LPT1.txt",
        "a/b.",
    ],
)
def test_unsafe_paths_are_refused(raw: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relative_path(raw)


def test_safe_paths_are_normalised() -> None:
    assert safe_relative_path("textures//wood.png") == "textures/wood.png"
    assert safe_relative_path("scene.blend") == "scene.blend"
    assert safe_relative_path("./scene.blend") == "scene.blend"


def test_file_name_has_no_folder() -> None:
    assert safe_file_name("scene.blend") == "scene.blend"
    with pytest.raises(UnsafePathError):
        safe_file_name("sub/scene.blend")


def test_names_that_merely_start_like_devices_are_fine() -> None:
    assert safe_relative_path("textures/console.png") == "textures/console.png"
    assert safe_relative_path("_outside_project/tmp/con_x/aux1.png")
