"""Which Blender a worker uses.

In order: `--blender` (a path, or `bpy` for the module), `FARMHAND_BLENDER`, `blender`
on PATH, then the `bpy` module (Blender as a Python module, `pip install farmhand[blender]`).
The module is probed in a child process: importing bpy costs hundreds of megabytes,
which the worker process itself has no use for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from farmhand.worker.blender.orphans import run_briefly

MODULE_SPECS = {"bpy", "module"}


class BlenderNotFound(RuntimeError):
    """No usable Blender; the message says how to get one."""


@dataclass(frozen=True)
class BlenderInstall:
    kind: Literal["executable", "module"]
    path: str | None
    """The executable (None for the module, which runs under `python`)."""
    version: str
    python: str = sys.executable
    """The interpreter that imports `bpy` (module kind only)."""

    @property
    def spec(self) -> str:
        """What to pass as `--blender` to get this Blender again."""
        return self.path if self.kind == "executable" and self.path else "bpy"


def executable_version(path: str) -> str:
    """`Blender 3.4.1` from `blender --version`; also proves the file really is Blender."""
    try:
        result = run_briefly([path, "--version"], timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BlenderNotFound(f"cannot run {path}: {error}") from error
    match = re.search(r"Blender (\d+\.\d+(?:\.\d+)?)", result.stdout.decode("utf-8", "replace"))
    if match is None:
        raise BlenderNotFound(
            f"{path} does not look like Blender (`--version` said nothing useful)"
        )
    return match.group(1)


_MODULE_VERSION = "farmhand-bpy-version:"
"""Marks the version in the child's output: importing bpy may print first (a warning
about a missing /etc/mtab in a container, say), and that must not hide the version."""


def module_version(python: str = sys.executable) -> str | None:
    """bpy's version as `python` imports it, asked in a child so this process stays small."""
    code = f"import bpy, sys; sys.stdout.write('\\n{_MODULE_VERSION}' + bpy.app.version_string)"
    try:
        result = run_briefly([python, "-c", code], timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    said = result.stdout.decode("utf-8", "replace")
    found = re.findall(re.escape(_MODULE_VERSION) + r"(\d+\.\d+(?:\.\d+)?)", said)
    return found[-1] if result.returncode == 0 and found else None


def install_from_spec(spec: str, origin: str = "--blender") -> BlenderInstall:
    """The Blender a `--blender` value names: a path, a name on PATH, or `bpy`/`module`.

    `origin` is where the value came from, so the error names the setting to fix.
    """
    if spec in MODULE_SPECS:
        version = module_version()
        if version is None:
            raise BlenderNotFound(
                f"{origin} asks for the bpy module, but `import bpy` fails in {sys.executable}; "
                "install it with `pip install 'farmhand[blender]'` (needs Python 3.11)"
            )
        return BlenderInstall("module", None, version)
    path = shutil.which(spec) or (spec if os.path.isfile(spec) else None)
    if path is None:
        raise BlenderNotFound(f"{origin} names {spec!r}, which is not an executable file")
    return BlenderInstall("executable", os.path.abspath(path), executable_version(path))


def find_blender(
    explicit: str | None = None, env: Mapping[str, str] | None = None
) -> BlenderInstall:
    """The Blender to use: `explicit`, then FARMHAND_BLENDER in `env`, PATH, the bpy module.

    Raises BlenderNotFound with the ways to fix it, so a worker or node can refuse to
    start rather than fail every task it takes.
    """
    env = os.environ if env is None else env
    if explicit:
        return install_from_spec(explicit, "--blender")
    if env.get("FARMHAND_BLENDER"):
        return install_from_spec(env["FARMHAND_BLENDER"], "FARMHAND_BLENDER")
    on_path = shutil.which("blender")
    if on_path:
        return BlenderInstall("executable", on_path, executable_version(on_path))
    version = module_version()
    if version is not None:
        return BlenderInstall("module", None, version)
    raise BlenderNotFound(
        "no Blender found: pass --blender /path/to/blender, set FARMHAND_BLENDER, put "
        "`blender` on PATH, or install the module with `pip install 'farmhand[blender]'`"
    )


def find_blenders(specs: list[str], env: Mapping[str, str] | None = None) -> list[BlenderInstall]:
    """Every Blender a worker offers: one per `--blender` value, or the one found.

    A value is `VERSION=PATH` (`5.0=/opt/blender-5.0/blender`), a path, or `bpy`. The
    version label is checked against what the Blender says it is, so a mislabelled one
    fails at start rather than opening files it cannot read.
    """
    if not specs:
        return [find_blender(None, env)]
    installs: list[BlenderInstall] = []
    for spec in specs:
        label, sep, target = spec.partition("=")
        if not sep:
            label, target = "", spec
        install = install_from_spec(target.strip(), f"--blender {spec}")
        if label and not (install.version + ".").startswith(label.strip().rstrip(".") + "."):
            raise BlenderNotFound(
                f"--blender {spec}: that Blender is {install.version}, not {label.strip()}"
            )
        if all(known.spec != install.spec for known in installs):
            installs.append(install)
    return installs
