"""The driver's path remapping, without Blender: driver.py imported with a stand-in `bpy`.

The driver runs inside Blender (tests/integration/test_shared_storage.py renders through
it in 5.0 and 3.4); here only its pure parts are checked: which paths move to which
root, and the order in which libraries, nested ones included, are remapped and reloaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from farmhand.worker.blender.process import DRIVER

A, B = "/mnt/studio-a/projects", "/srv/studio-b/projects"
PAIRS = [[A, B], ["P:\\", B]]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    stand_in = types.ModuleType("bpy")
    stand_in.app = SimpleNamespace(handlers=SimpleNamespace(persistent=lambda f: f))  # type: ignore[attr-defined]
    stand_in.data = SimpleNamespace()  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("farmhand_driver_under_test", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "bpy", stand_in)
        spec.loader.exec_module(module)  # defines functions only: main() runs as a script
    yield module


@pytest.mark.parametrize(
    ("path", "moved"),
    [
        (A + "/tex/wood.png", B + "/tex/wood.png"),
        ("P:\\tex\\wood.png", B + "/tex/wood.png"),
        ("p:/tex/wood.png", B + "/tex/wood.png"),  # Windows roots: any case, either slash
        (A, B),
        (A + "X/wood.png", None),  # a prefix, not a folder boundary
        ("//tex/wood.png", None),  # relative: resolves on the share already
        ("/home/anna/wood.png", None),
        ("", None),
    ],
)
def test_paths_move_from_another_root_to_this_one(
    driver: Any, path: str, moved: str | None
) -> None:
    assert driver.remapped(path, PAIRS) == moved


@dataclass
class Library:
    name: str
    filepath: str
    parent: Library | None = None


@dataclass
class Libraries:
    """bpy.data.libraries as Blender keeps it: reloading a library reads the file at its
    new path and adds the libraries that file links, by the paths saved in it, unless
    a library with that path is there already (`links`: file -> paths it links)."""

    links: dict[str, list[str]]
    listed: list[Library] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)

    def add(self, path: str, parent: Library | None = None) -> None:
        name = os.path.basename(path.replace("\\", "/"))
        taken = {library.name for library in self.listed}
        unique, number = name, 0
        while unique in taken:
            number += 1
            unique = f"{name}.{number:03d}"
        self.listed.append(Library(unique, path, parent))

    def move(self, library: Library, path: str) -> None:
        library.filepath = path
        self.reloads.append(library.name)
        for linked in self.links.get(path, []):
            if all(other.filepath != linked for other in self.listed):
                self.add(linked, library)

    def settle(self, driver: Any, limit: int = 256) -> dict[str, int]:
        counts: dict[str, int] = driver.settle_libraries(
            lambda: list(self.listed), PAIRS, self.move, limit
        )
        return counts


def test_nested_libraries_are_remapped_once_their_parent_is_read_from_the_new_root(
    driver: Any,
) -> None:
    # scene -> set.blend -> props.blend -> tex.blend, every link saved with A's root
    libraries = Libraries(
        {
            B + "/lib/set.blend": [A + "/lib/props.blend"],
            B + "/lib/props.blend": ["P:\\lib\\tex.blend"],
        }
    )
    libraries.add(A + "/lib/set.blend")
    assert libraries.settle(driver) == {"main": 1, "inside": 2}
    assert libraries.reloads == ["set.blend", "props.blend", "tex.blend"]
    assert [library.filepath for library in libraries.listed] == [
        B + "/lib/set.blend",
        B + "/lib/props.blend",
        B + "/lib/tex.blend",
    ]


def test_a_library_linked_twice_is_reloaded_once(driver: Any) -> None:
    libraries = Libraries({B + "/set.blend": [A + "/props.blend"]})
    libraries.add(A + "/set.blend")
    libraries.add(A + "/props.blend")  # the scene links it too
    assert libraries.settle(driver) == {"main": 2, "inside": 0}
    assert libraries.reloads == ["set.blend", "props.blend"]


def test_nothing_is_reloaded_when_no_library_is_on_another_root(driver: Any) -> None:
    libraries = Libraries({})
    libraries.add(B + "/set.blend")
    libraries.add("//relative.blend")
    assert libraries.settle(driver) == {"main": 0, "inside": 0}
    assert libraries.reloads == []


def test_libraries_linking_each_other_stop_at_the_limit(driver: Any) -> None:
    # Each reload of a cycle finds the other file under A's root again: without the
    # limit this would go on forever (Blender itself merges such duplicates).
    libraries = Libraries({B + "/a.blend": [A + "/b.blend"], B + "/b.blend": [A + "/a.blend"]})
    libraries.add(A + "/a.blend")
    counts = libraries.settle(driver, limit=6)
    assert len(libraries.reloads) == 6
    assert counts == {"main": 1, "inside": 5}


@dataclass
class Datablock:
    filepath: str
    library: object | None = None
    packed_file: object | None = None


class Stubborn(Datablock):
    """A linked datablock whose path cannot be set (as a future Blender might refuse)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "filepath" and hasattr(self, "filepath"):
            raise AttributeError("read-only")
        super().__setattr__(name, value)


def test_paths_of_linked_datablocks_are_rewritten_and_counted_apart(
    driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = object()
    own = Datablock(A + "/tex/floor.png")
    linked = Datablock("P:\\tex\\wood.png", library=library)
    packed = Datablock(A + "/tex/packed.png", packed_file=object())
    refused = Stubborn(A + "/sounds/beep.wav", library=library)
    data = SimpleNamespace(images=[own, linked, packed], sounds=[refused], fonts=[])
    monkeypatch.setattr(driver.bpy, "data", data)
    counts = driver.remap_datablock_paths(PAIRS)
    assert counts == {"main": 1, "inside": 1, "refused": 1}
    assert own.filepath == B + "/tex/floor.png"
    assert linked.filepath == B + "/tex/wood.png"
    assert packed.filepath == A + "/tex/packed.png", "packed files are inside the .blend"


@pytest.mark.parametrize(
    ("scene", "depth", "tile", "tile_depth"),
    [
        ("OPEN_EXR", "32", "OPEN_EXR", "32"),  # the scene's float kept
        ("OPEN_EXR_MULTILAYER", "16", "OPEN_EXR_MULTILAYER", "16"),  # and its passes
        ("PNG", "16", "PNG", "8"),
        ("TIFF", "16", "PNG", "8"),
        ("JPEG", "8", "PNG", "8"),
        ("PNG", "8", "PNG", "8"),
    ],
)
def test_a_tile_keeps_an_openexr_format_and_is_8_bit_png_otherwise(
    driver: Any,
    scene: str,
    depth: str,
    tile: str,
    tile_depth: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a tile is rendered in, from the image settings after the job's overrides (the
    job's format, or the scene's when the job keeps the .blend's): OpenEXR stays as it
    is; anything else becomes 8-bit PNG, the only other format tiles are cut and merged
    in (`tile_extensions`)."""
    settings = SimpleNamespace(file_format=scene, color_depth=depth)
    driver.set_tile_format(settings)
    assert (settings.file_format, settings.color_depth) == (tile, tile_depth)
    said = capsys.readouterr().out
    if (scene, depth) == (tile, tile_depth):
        assert said == "", "nothing changed, nothing to say"
    else:
        assert f"tiles are rendered as 8-bit PNG, not {scene} at {depth} bits" in said


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("../../../../tmp/x/pwn_", "tmp/x/pwn_"),
        ("/etc/cron.d/pwn_", "etc/cron.d/pwn_"),
        ("C:\\Users\\anna\\..\\..\\pwn_", "Users/anna/pwn_"),  # dropped, not resolved
        ("//./a/../b/", "a/b/"),
        ("..", ""),
        ("beauty_", "beauty_"),
        ("depth/depth_####", "depth/depth_####"),
        ("", ""),
    ],
)
def test_a_file_output_path_is_made_relative_and_inside(driver: Any, path: str, safe: str) -> None:
    """A File Output slot path joined to the node's folder never climbs out of it."""
    assert driver.contained(path) == safe
