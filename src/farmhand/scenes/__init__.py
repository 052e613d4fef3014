"""Small scenes made with Blender at run time, for the demo, the tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from farmhand.worker.blender.discovery import BlenderInstall, find_blender

BUILDER = Path(__file__).with_name("build_scene.py")
PROJECT_BUILDER = Path(__file__).with_name("build_project.py")
VARIANTS = ("animated", "no-camera", "autoexec", "slow")


class SceneBuildError(RuntimeError):
    pass


def make_scene(
    out: Path,
    variant: str = "animated",
    *,
    install: BlenderInstall | None = None,
    width: int = 64,
    height: int = 48,
    frames: str = "1-24",
    samples: int = 4,
    engine: str = "CYCLES",
    marker: Path | None = None,
    output_format: str = "PNG",
    fps: float = 24.0,
) -> Path:
    """Build a small scene at `out` with Blender and return its path.

    Uses the bpy module unless `install` says otherwise; build with the Blender that will
    render it (a file saved by 5.0 does not open in 3.4). Variants: `animated` (a cube
    moving across `frames`), `no-camera` (cannot render), `autoexec` (a registered text
    block that writes `marker`, and a driver expression that writes `marker`-driver, if
    scripts are ever trusted), `slow` (16x the samples).
    Raises SceneBuildError with Blender's output if the build fails.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown scene variant {variant!r}; one of {VARIANTS}")
    install = install or find_blender("bpy")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    options = [
        "--out", str(out), "--variant", variant, "--width", str(width),
        "--height", str(height), "--frames", frames, "--samples", str(samples),
        "--engine", engine, "--marker", str(marker or ""), "--output-format", output_format,
        "--fps", str(fps),
    ]  # fmt: skip
    run_builder(install, BUILDER, options, out, f"the {variant} scene")
    return out


def run_builder(
    install: BlenderInstall, script: Path, options: list[str], made: Path, what: str
) -> None:
    """Run a builder script in Blender; SceneBuildError with its output unless `made` exists."""
    if install.kind == "module":
        command = [install.python, str(script), "--", *options]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", "--python-exit-code", "1",
                   "--python", str(script), "--", *options]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0 or not made.exists():
        raise SceneBuildError(
            f"building {what} failed ({result.returncode}):\n"
            + (result.stdout + result.stderr)[-3000:]
        )


def make_project(
    root: Path,
    *,
    install: BlenderInstall | None = None,
    width: int = 48,
    height: int = 32,
    samples: int = 2,
    extras: bool = False,
    library_assets: bool = False,
) -> Path:
    """Build a project of several files under `root` (see build_project.py); the scene's path.

    `root/shots/scene.blend` uses `root/textures/checker.png` and links `LibCube` from
    `root/lib/library.blend`, all by absolute paths. `extras`: also an image sequence,
    UDIM tiles, a sound, a font and a volume file (not rendered, only packed).
    `library_assets`: the library's cube is textured by `root/textures/wood.png` and by a
    material linked from a nested library, `root/lib/nested.blend` (absolute paths too).
    """
    install = install or find_blender("bpy")
    root = Path(root).resolve()
    scene = root / "shots" / "scene.blend"
    options = ["--root", str(root), "--width", str(width), "--height", str(height),
               "--samples", str(samples), *(["--extras"] if extras else []),
               *(["--library-assets"] if library_assets else [])]  # fmt: skip
    run_builder(install, PROJECT_BUILDER, options, scene, "the project")
    return scene
