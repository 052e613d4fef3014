"""`farmhand addon zip | install`: the Blender add-on, ready for Blender.

The add-on ships inside the farmhand package (`farmhand/addon/`) so its version always
matches the CLI it drives. Blender installs add-ons from a zip whose top folder is the
module name; that name is `farmhand_addon`, not `farmhand` (see the add-on's docstring).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from farmhand.addon.runner import EXECUTABLE
from farmhand.cli.jobs_cmd import console, fail
from farmhand.cli.shown import shown

MODULE = "farmhand_addon"
DONE = "farmhand-addon-installed"

INSTALL_SCRIPT = f"""
import sys
import bpy
zip_path, farmhand = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
bpy.ops.preferences.addon_enable(module={MODULE!r})
bpy.context.preferences.addons[{MODULE!r}].preferences.farmhand_path = farmhand
bpy.ops.wm.save_userpref()
print({DONE!r}, bpy.utils.user_resource("SCRIPTS", path="addons"), flush=True)
"""
"""Runs inside Blender: install, enable, point the add-on at this farmhand, keep it."""

addon = typer.Typer(
    no_args_is_help=True, help="The Blender add-on: submit to the farm from inside Blender."
)


def addon_sources() -> list[tuple[str, bytes]]:
    """(name, bytes) of each of the add-on's modules, read from the installed package."""
    folder = resources.files("farmhand") / "addon"
    return sorted(
        (entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".py")
    )


def write_zip(path: Path) -> Path:
    """An add-on zip for Preferences > Add-ons > Install: `farmhand_addon/*.py` only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in addon_sources():
            archive.writestr(f"{MODULE}/{name}", data)
    return path


def this_farmhand() -> str:
    """The `farmhand` executable running now: the one the add-on should drive."""
    name = EXECUTABLE
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    argv0 = Path(sys.argv[0])
    if argv0.name.startswith("farmhand") and argv0.is_file():
        return str(argv0.resolve())
    return shutil.which(name) or ""


@addon.command("zip")
def zip_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the zip.")] = Path(
        f"{MODULE}.zip"
    ),
) -> None:
    """Write the add-on as a zip: in Blender, Preferences > Add-ons > Install from disk."""
    console.print(f"add-on zip: {shown(write_zip(output))}", highlight=False, soft_wrap=True)


@addon.command()
def install(
    blender: Annotated[
        str | None,
        typer.Option(
            "--blender",
            help="The Blender executable to install into (default: blender on PATH).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Install and enable the add-on in a Blender's user preferences.

    Also sets the add-on's farmhand CLI to this farmhand, which a Blender started from
    a desktop menu would not find on its PATH. Close that Blender first: a running
    Blender may save its own preferences over these on exit.
    """
    executable = blender or shutil.which("blender")
    if not executable:
        raise fail("no blender on PATH: pass --blender /path/to/blender")
    with tempfile.TemporaryDirectory(prefix="farmhand-addon-") as tmp:
        archive = write_zip(Path(tmp) / f"{MODULE}.zip")
        command = [executable, "-b", "--python-exit-code", "1", "--python-expr", INSTALL_SCRIPT]
        command += ["--", str(archive), this_farmhand()]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=300, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise fail(f"cannot run {executable}: {exc}") from None
    installed = [line for line in result.stdout.splitlines() if line.startswith(DONE)]
    if result.returncode != 0 or not installed:
        said = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise fail(f"{executable} did not install the add-on: {' | '.join(said)}")
    folder = installed[-1][len(DONE) :].strip()
    console.print(
        f"installed and enabled {MODULE} in {shown(folder)}; set the manager URL and API token in "
        "Preferences > Add-ons > farmhand",
        highlight=False,
        soft_wrap=True,
    )
