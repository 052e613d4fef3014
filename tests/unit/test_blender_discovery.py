"""Which Blender a worker picks, and what it says when there is none."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from farmhand.worker.blender import discovery
from farmhand.worker.blender.discovery import BlenderNotFound, find_blender, install_from_spec


def fake_blender(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "blender"
    path.write_text(f"#!/bin/sh\necho 'Blender {version}'\necho '\tbuild date: today'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "module_version", lambda *_a, **_k: None)


def test_explicit_path_wins_over_env_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = fake_blender(tmp_path / "a", "4.2.1")
    from_env = fake_blender(tmp_path / "b", "3.6.0")
    monkeypatch.setenv("PATH", str(fake_blender(tmp_path / "c", "3.4.1").parent))
    install = find_blender(str(explicit), env={"FARMHAND_BLENDER": str(from_env)})
    assert (install.kind, install.path, install.version) == ("executable", str(explicit), "4.2.1")
    assert install.spec == str(explicit)


def test_env_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = fake_blender(tmp_path / "b", "3.6.0")
    monkeypatch.setenv("PATH", str(fake_blender(tmp_path / "c", "3.4.1").parent))
    assert find_blender(env={"FARMHAND_BLENDER": str(from_env)}).version == "3.6.0"
    assert find_blender(env={}).version == "3.4.1"


def test_bpy_spec_means_the_module(no_module: None) -> None:
    with pytest.raises(BlenderNotFound, match=r"farmhand\[blender\]"):
        find_blender("bpy")
    with pytest.raises(BlenderNotFound, match="FARMHAND_BLENDER"):
        install_from_spec("module", "FARMHAND_BLENDER")


def test_nothing_found_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_module: None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BlenderNotFound) as caught:
        find_blender(env={})
    assert "--blender" in str(caught.value)
    assert "farmhand[blender]" in str(caught.value)


def test_a_path_that_is_not_blender_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BlenderNotFound, match="not an executable"):
        find_blender(str(tmp_path / "missing"))
    liar = tmp_path / "liar"
    liar.write_text("#!/bin/sh\necho hello\n")
    liar.chmod(0o755)
    with pytest.raises(BlenderNotFound, match="does not look like Blender"):
        find_blender(str(liar))


@pytest.mark.blender
def test_real_module_and_executable_report_their_versions() -> None:
    import importlib.util
    import shutil

    if importlib.util.find_spec("bpy") is not None:
        module = find_blender("bpy")
        assert module.kind == "module" and module.path is None
        assert int(module.version.split(".")[0]) >= 4
    if shutil.which("blender"):
        exe = find_blender("blender")
        assert exe.kind == "executable" and exe.version.count(".") == 2


FAKE_BPY = """
import sys
print("Warning: could not read /etc/mtab")  # as bpy prints in a container without it
print("5.9.9 is not the version")


class app:
    version_string = "{version}"
"""


@pytest.mark.parametrize("version", ["5.0.1", "4.2"])
def test_the_bpy_version_is_read_past_what_importing_bpy_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    (tmp_path / "bpy.py").write_text(FAKE_BPY.format(version=version))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert discovery.module_version() == version


def test_no_bpy_is_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bpy.py").write_text("raise ImportError('no bpy here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert discovery.module_version() is None
