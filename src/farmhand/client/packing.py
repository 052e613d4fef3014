"""Packing a scene for the farm: its dependency closure, with paths every worker can follow.

A studio's .blend points at textures, linked libraries, sounds, fonts, caches — often by
absolute paths that exist only on the artist's machine. A worker has none of those
folders, so before anything is uploaded the client:

1. traces every file the scene needs with blender-asset-tracer (BAT): images (also UDIM
   tiles and image sequences), linked .blend libraries (recursively), sounds, fonts,
   movie clips, OpenVDB volumes and simulation / point caches;
2. decides where each lands in the job's tree: files under the project folder keep
   their place; files outside it go under `_outside_project/<their absolute path>`;
3. rewrites, in COPIES of the .blend files, every path that would not resolve on a worker
   (absolute, or pointing outside the project) to a path relative to the .blend (`//…`).

The user's files are only ever read. Files needing no rewrite are uploaded straight
from where they are (no copy of a big project); rewritten .blend files live in a
temporary folder that `PackedProject.close()` removes.

BAT reads .blend files from Blender 2.8 to 5.0 (including 5.0's zstd-compressed files
and its new file header); the tests pack scenes saved by Blender 5.0 and 3.4.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from types import TracebackType
from typing import Self

from blender_asset_tracer import blendfile, bpathlib, trace
from blender_asset_tracer.pack import Packer

from farmhand.shared.hashing import CHUNK_SIZE
from farmhand.shared.paths import UnsafePathError, safe_relative_path

OUTSIDE = "_outside_project"
GZIP_MAGIC = b"\x1f\x8b"


class PackError(RuntimeError):
    """The scene (or one of its libraries) could not be read or packed."""


@dataclass
class PackedProject:
    """A job's tree: relative path → the local file holding its bytes.

    `files` point either at the user's own files (read-only) or at rewritten copies in
    `workdir`; `missing` are files the scene uses that do not exist.
    """

    main_file: str
    files: dict[str, Path]
    missing: list[Path]
    project: Path
    workdir: Path
    rewritten: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files.values())

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ManifestPacker(Packer):
    """BAT's packer, told to note where each file goes instead of copying it.

    BAT rewrites .blend files into its own temporary folder (`read_from`); everything
    else is recorded as source → place in the tree. Paths inside the project keep their
    place even when written absolute (BAT would move them under `_outside_project`).
    """

    def __init__(self, bfile: Path, project: Path, target: Path) -> None:
        super().__init__(bfile, project, str(target))
        self.placed: dict[PurePath, Path] = {}
        self.moved: set[PurePath] = set()

    def _find_new_paths(self) -> None:
        project = bpathlib.make_absolute(self.project)
        for path in self._new_location_paths:
            action = self._actions[path]
            try:
                inside = bpathlib.make_absolute(path).relative_to(project)
            except ValueError:
                action.new_path = Path(self._target_path, OUTSIDE, bpathlib.strip_root(path))
            else:
                action.new_path = Path(self._target_path, inside)

    def _write_info_file(self) -> None:
        """No pack-info.txt: the job's tree holds only what the scene uses."""

    def _send_to_target(self, asset_path: Path, target: PurePath, may_move: bool = False) -> None:
        self.placed[target] = asset_path
        if may_move:
            self.moved.add(target)


@contextmanager
def _quiet_tracer() -> Iterator[None]:
    """BAT logs each missing file as a warning; we report them ourselves, once, as a list."""
    logger = logging.getLogger("blender_asset_tracer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def trace_files(blend: Path) -> list[Path]:
    """Every existing file `blend` depends on (sequences and UDIM tiles expanded)."""
    found: list[Path] = []
    try:
        with _quiet_tracer():
            for usage in trace.deps(blend):
                found.extend(usage.files() if usage.is_sequence else [usage.abspath])
    except (OSError, ValueError, blendfile.exceptions.BlendFileError) as error:
        raise PackError(f"cannot read {blend}: {error}") from error
    finally:
        blendfile.close_all_cached()
    return [path for path in found if path.is_file()]


def default_project(blend: Path, dependencies: Iterable[Path]) -> Path:
    """The deepest folder holding the scene and every file it uses."""
    paths = [str(blend.parent), *(str(p.parent) for p in dependencies)]
    return Path(os.path.commonpath(paths))


def pack(blend: Path, project: Path | None = None) -> PackedProject:
    """Plan the job's tree for `blend`; rewrite copies of the .blend files that need it.

    `project`: the folder whose layout the tree keeps (default: the deepest folder
    holding the scene and all it uses). Missing files are listed, not fatal: the caller
    decides (`--allow-missing`).
    """
    blend = bpathlib.make_absolute(blend)
    if project is None:
        project = default_project(blend, trace_files(blend))
    project = bpathlib.make_absolute(project)
    try:
        blend.relative_to(project)
    except ValueError:
        raise PackError(f"{blend} is not inside the project folder {project}") from None
    workdir = Path(tempfile.mkdtemp(prefix="farmhand-pack-"))
    target = workdir / "tree"
    try:
        packer = _ManifestPacker(blend, project, target)
        with packer, _quiet_tracer():
            packer.strategise()
            packer.execute()
            files = _collect(packer, target, workdir)
            main_file = blend.relative_to(project).as_posix()
            missing = sorted(packer.missing_files)
            rewritten = sorted(_relative(p, target) for p in packer.moved)
    except (OSError, ValueError, blendfile.exceptions.BlendFileError) as error:
        shutil.rmtree(workdir, ignore_errors=True)
        raise PackError(f"cannot pack {blend}: {error}") from error
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        blendfile.close_all_cached()
    return PackedProject(main_file, files, missing, project, workdir, rewritten)


def _relative(place: PurePath, target: Path) -> str:
    relative = PurePosixPath(Path(place).relative_to(target).as_posix())
    try:
        return safe_relative_path(str(relative))
    except UnsafePathError as error:
        raise PackError(f"a packed file would have an unsafe name: {error}") from error


def settle_blend(rewritten: Path, dest: Path) -> None:
    """Move a rewritten .blend to `dest`, the same bytes for the same scene every time.

    BAT re-compresses a compressed .blend with gzip, whose header holds the time and a
    temporary file name: two packs of one scene would differ, and the second submit
    would upload the .blend again. Re-written here with neither (Blender reads gzip).
    """
    with rewritten.open("rb") as head:
        magic = head.read(2)
    if magic != GZIP_MAGIC:
        shutil.move(rewritten, dest)
        return
    with (
        gzip.open(rewritten, "rb") as source,
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as target,
    ):
        shutil.copyfileobj(source, target, CHUNK_SIZE)
    rewritten.unlink()


def _collect(packer: _ManifestPacker, target: Path, workdir: Path) -> dict[str, Path]:
    """The tree as relative path → local file; rewritten .blend files copied to `workdir`.

    BAT's own temporary folder goes away when the packer closes, so its rewritten files
    are moved into ours first.
    """
    keep = workdir / "rewritten"
    files: dict[str, Path] = {}
    for place, source in sorted(packer.placed.items()):
        relative = _relative(place, target)
        if place in packer.moved:
            copy = keep / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            settle_blend(source, copy)
            source = copy
        if source.is_file():
            files[relative] = source
    return files
