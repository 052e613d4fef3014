"""Packing a scene for the farm: its dependency closure, with paths every worker can follow.

A studio's .blend points at textures, linked libraries, sounds, fonts, caches — often by
absolute paths that exist only on the artist's machine. A worker has none of those
folders, so before anything is uploaded the client:

1. traces every file the scene needs with blender-asset-tracer (BAT): images (also UDIM
   and UVTILE tiles, image sequences), linked .blend libraries (recursively), sounds, fonts,
   movie clips, OpenVDB volumes and simulation / point caches, and lists those that do
   not exist (`_usage_files`, for the trace and the pack alike);
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

import glob
import gzip
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from types import TracebackType
from typing import Self

from blender_asset_tracer import blendfile, bpathlib, cdefs, trace
from blender_asset_tracer.pack import AssetAction, Packer, PathAction
from blender_asset_tracer.pack import progress as pack_progress
from blender_asset_tracer.trace.result import BlockUsage

from farmhand.client.sequences import (
    TILE_MARKERS,
    VOLUME_MODES,
    FrameMap,
    Mode,
    is_tiled,
    member_number,
    numbered,
    span,
    tile_name,
)
from farmhand.shared.blendbounds import BlendTooLarge, check_blend
from farmhand.shared.frames import MAX_FRAMES_PER_JOB
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
        self.usages: list[BlockUsage] = []
        """Every usage BAT visited, for `_usage_files` to say what is missing (BAT's own
        `missing_files` cannot see a gap in a sequence)."""

    def _visit_asset(self, asset_path: Path, usage: BlockUsage) -> None:
        self.usages.append(usage)
        super()._visit_asset(asset_path, usage)

    def _visit_sequence(self, asset_path: Path, usage: BlockUsage) -> None:
        """A sequence is packed when any file of it exists (`_sequence_files`), not only
        when the one the .blend names does (BAT's rule, which dropped the whole sequence
        with its first frame); what is missing of it `_usage_files` says."""
        self.usages.append(usage)
        files = _sequence_files(asset_path)
        if not files:
            return
        action = self._actions[asset_path]
        action.usages.append(usage)
        if usage.asset_path.is_blendfile_relative() and self._path_in_project(files[0]):
            action.new_path = self._target_path / asset_path.relative_to(self.project)
        else:
            action.path_action = PathAction.FIND_NEW_LOCATION
            self._new_location_paths.add(asset_path)

    def _copy_asset_and_deps(self, asset_path: Path, action: AssetAction) -> None:
        """A sequence's files are those `_sequence_files` finds, placed as BAT places
        them: relative to the named file's folder (or the cache folder itself)."""
        if not any(usage.is_sequence for usage in action.usages):
            super()._copy_asset_and_deps(asset_path, action)
            return
        assert action.new_path is not None
        folder = asset_path.is_dir()
        base = asset_path if folder else asset_path.parent
        packed_base = action.new_path if folder else action.new_path.parent
        for file in _sequence_files(asset_path):
            self._send_to_target(file, packed_base / file.relative_to(base))

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


IMA_GEN_TILE = 2
"""`ImageTile.gen_flag`: a tile Blender generates itself (a colour fill), never read from a file."""
_TILE_LIMIT = 10_000


class _ImageUsers:
    """The image users of each .blend, read once per file and only if asked."""

    def __init__(self) -> None:
        self._by_file: dict[Path, dict[int, list[FrameMap]]] = {}

    def of(self, image: blendfile.BlendFileBlock) -> list[FrameMap]:
        bfile = image.bfile
        users = self._by_file.get(bfile.filepath)
        if users is None:
            users = self._by_file[bfile.filepath] = _read_image_users(bfile)
        return users.get(image.addr_old, [])


def _read_image_users(bfile: blendfile.BlendFile) -> dict[int, list[FrameMap]]:
    """Image address → the frames of it its users show (an `ImageUser`: an image texture
    node's Frames, Start Frame, Offset and Cyclic), from the node (shader, compositor)
    and texture blocks that name an image and hold one.

    Other users (a camera's background, an image editor) are not rendered; one in a file
    other than the image's (a linked image used by a local node) is not found: then the
    image has no users here and its gaps are judged from the files alone."""
    found: dict[int, list[FrameMap]] = {}
    for block in bfile.blocks:
        try:
            if block.dna_type_name == "bNode":
                image = block.get(b"id", default=0)
                storage = block.get_pointer(b"storage", default=None) if image else None
                if storage is None:
                    continue
                if storage.dna_type_name == "ImageUser":
                    prefix: tuple[bytes, ...] = ()
                elif storage.dna_type.has_field(b"iuser"):
                    prefix = (b"iuser",)
                else:
                    continue
                holder = storage
            elif block.code == b"TE" and block.dna_type.has_field(b"iuser"):
                image = block.get(b"ima", default=0)
                prefix, holder = (b"iuser",), block
            else:
                continue
            if not image:
                continue
            user = FrameMap(
                start=holder.get((*prefix, b"sfra")),
                duration=holder.get((*prefix, b"frames")),
                offset=holder.get((*prefix, b"offset")),
                mode=Mode.REPEAT if holder.get((*prefix, b"cycl")) else Mode.IMAGE,
                image_user=True,
            )
        except (KeyError, blendfile.exceptions.SegmentationFault):
            continue  # a struct this reader does not know: that user is not counted
        found.setdefault(image, []).append(user)
    return found


def _tile_numbers(image: blendfile.BlendFileBlock) -> list[int]:
    """The tiles the image names (its `tiles` list), those Blender generates left out."""
    numbers: list[int] = []
    seen: set[int] = set()
    tile = image.get_pointer((b"tiles", b"first"), default=None)
    while tile is not None and tile.addr_old not in seen and len(seen) < _TILE_LIMIT:
        seen.add(tile.addr_old)
        if not tile.get(b"gen_flag", default=0) & IMA_GEN_TILE:
            numbers.append(tile.get(b"tile_number"))
        tile = tile.get_pointer(b"next", default=None)
    return numbers


def _sequence_files(path: Path) -> list[Path]:
    """The files of a sequence that exist: a folder's files (a fluid or external point
    cache), the files a glob matches (a disk point cache), every tile of a tiled image,
    every numbered file of a sequence (`tex_0001.png` → `tex_0002.png`…).

    As blender-asset-tracer's expansion, but also when the file the .blend names is gone
    (BAT then packs none of the sequence) and for `<UVTILE>`, which BAT does not know."""
    if path.is_dir():
        return sorted(file for file in path.rglob("*") if file.is_file())
    name = path.name
    for marker in TILE_MARKERS:
        name = name.replace(marker, "*")
    if "*" in name:
        pattern = "*".join(glob.escape(part) for part in name.split("*"))
        return sorted(file for file in path.parent.glob(pattern) if file.is_file())
    decoded = numbered(name)
    if decoded is None:
        return [path] if path.is_file() else []
    head, _, tail = decoded
    pattern = f"{glob.escape(head)}*{glob.escape(tail)}"
    return sorted(
        file
        for file in path.parent.glob(pattern)
        if member_number(file.name, head, tail) is not None and file.is_file()
    )


def _members(
    usage: BlockUsage, existing: list[Path], frames: Sequence[int] | None, users: _ImageUsers
) -> list[Path] | None:
    """Every file of a sequence the job's `frames` need (None: all of its frames), or None
    if that cannot be told from the .blend. The frames of each kind go through one rule,
    `sequences.FrameMap`:

    - a tiled image (`<UDIM>`, `<UVTILE>`): each tile in the image's list;
    - an image sequence: the frames its image users show; with none, or no `frames`,
      the numbers from the lowest to the highest of the file it names and those on disk
      (`sequences.span`), a guess at a range the .blend does not state would list files
      nobody needs;
    - an OpenVDB volume sequence: the frames its Start, Frames, Offset and mode show;
    - a point cache baked to disk: its frames within the job's, the last one held after
      its end; a cache written every few frames (particles' Cache Step) is not, Blender
      choosing which frames it writes. A cache kept in the .blend has no usage at all.

    Others (an external point cache, a fluid cache folder, an Alembic sequence) are None."""
    block = usage.block
    path: Path = usage.abspath
    try:
        if block.code == b"IM":
            return _image_members(block, path, existing, frames, users)
        if block.code == b"VO":
            return _volume_members(block, path, frames)
        if block.dna_type_name == "PointCache":
            return _cache_members(block, path, frames)
    except (KeyError, blendfile.exceptions.SegmentationFault):
        return None
    return None


def _image_members(
    image: blendfile.BlendFileBlock,
    path: Path,
    existing: list[Path],
    frames: Sequence[int] | None,
    users: _ImageUsers,
) -> list[Path] | None:
    source = image.get(b"source", default=cdefs.IMA_SRC_FILE)
    if source == cdefs.IMA_SRC_TILED:
        if not is_tiled(path.name):
            return None
        return [path.with_name(tile_name(path.name, n)) for n in _tile_numbers(image)] or None
    if source != cdefs.IMA_SRC_SEQUENCE:
        return None
    decoded = numbered(path.name)
    if decoded is None:
        return None
    head, width, tail = decoded

    def named(number: int) -> Path:
        return path.with_name(f"{head}{number:0{width}d}{tail}")

    image_users = users.of(image)
    if frames is not None and image_users:
        return [named(n) for n in sorted(set().union(*(u.numbers(frames) for u in image_users)))]
    on_disk = [
        number
        for file in existing
        if (number := member_number(file.name, head, tail)) is not None
        and named(number).name == file.name
    ]
    numbers = span(member_number(path.name, head, tail), on_disk, MAX_FRAMES_PER_JOB)
    return None if numbers is None else [named(n) for n in numbers]


def _volume_members(
    volume: blendfile.BlendFileBlock, path: Path, frames: Sequence[int] | None
) -> list[Path] | None:
    """The files of an OpenVDB sequence: the named file's last digits replaced by each
    frame's number, as wide as they are (BKE_volume_frame, volume_filepath_get)."""
    decoded = numbered(path.name)
    mode = volume.get(b"sequence_mode")
    if not volume.get(b"is_sequence") or decoded is None or not 0 <= mode < len(VOLUME_MODES):
        return None
    head, width, tail = decoded
    shown = FrameMap(
        start=volume.get(b"frame_start"),
        duration=volume.get(b"frame_duration"),
        offset=volume.get(b"frame_offset"),
        mode=VOLUME_MODES[mode],
    )
    return [path.with_name(f"{head}{n:0{width}d}{tail}") for n in sorted(shown.numbers(frames))]


def _cache_members(
    cache: blendfile.BlendFileBlock, path: Path, frames: Sequence[int] | None
) -> list[Path] | None:
    """The files of a point cache baked to disk, `<name>_<frame:06>_<index:02>.bphys`, in
    the glob BAT makes of it (ptcache_filepath). An external cache (a folder of files
    from elsewhere, named as its maker chose) is not told."""
    start, end = cache.get(b"startframe"), cache.get(b"endframe")
    if "*" not in path.name or cache.get(b"step", default=1) != 1 or end < start:
        return None
    index = cache.get(b"index")
    kept = FrameMap(start=start, duration=end - start + 1, offset=start - 1, mode=Mode.CACHE)
    return [
        path.with_name(path.name.replace("*", f"{frame:06d}_{index:02d}", 1))
        for frame in sorted(kept.numbers(frames))
    ]


def _usage_files(
    usage: BlockUsage, frames: Sequence[int] | None, users: _ImageUsers
) -> tuple[list[Path], list[Path]]:
    """(existing, missing): the one place deciding which files a usage stands for and
    which of them do not exist, for `trace_files` and `pack` alike (what is uploaded and
    what is reported).

    BAT's own expansion of a sequence is a glob of the files that exist, so a missing
    tile or frame was never seen: `_members` says which files the job needs. A sequence
    whose files cannot be told is missing as a whole when none of it exists."""
    path: Path = usage.abspath
    if not usage.is_sequence:
        return ([path] if path.is_file() else []), ([] if path.exists() else [path])
    existing = _sequence_files(path)
    members = _members(usage, existing, frames, users)
    if members is None:
        return existing, ([] if existing else [path])
    return existing, [member for member in members if not member.is_file()]


def readable(blend: Path) -> None:
    """PackError if reading `blend` with BAT would go past a bound (`check_blend`: a
    compressed .blend inflating to gigabytes, a block claiming them), before BAT reads it
    whole into memory or a temporary file."""
    try:
        check_blend(blend)
    except BlendTooLarge as error:
        raise PackError(f"cannot read {blend}: {error}") from None


class _BoundedOpens(pack_progress.Callback):
    """BAT's progress callback, for the one call BAT makes just before it opens each
    .blend of a trace (`trace_blendfile`, from `file2blocks.BlockIterator.open_blendfile`:
    the scene, then every library it links, recursively): that file passes `readable`
    first, and a refusal names it.

    `readable(blend)` alone held the scene to the bounds, not its libraries: a linked
    library that inflates to gigabytes (51 KB of zstd in an asset folder) cost 1.2 GB and
    a minute inside BAT, then an error about the scene. This callback is BAT's own hook
    for every .blend it opens while tracing (`trace.deps`, which `Packer.strategise` runs
    too), so no BAT function is replaced; BAT opens no .blend without tracing it first."""

    def trace_blendfile(self, filename: Path) -> None:
        readable(filename)


def trace_files(blend: Path) -> list[Path]:
    """Every existing file `blend` depends on (sequences and tiles expanded)."""
    readable(blend)
    found: list[Path] = []
    users = _ImageUsers()
    try:
        with _quiet_tracer():
            for usage in trace.deps(blend, _BoundedOpens()):
                found.extend(_usage_files(usage, None, users)[0])
    except (OSError, ValueError, blendfile.exceptions.BlendFileError) as error:
        raise PackError(f"cannot read {blend}: {error}") from error
    finally:
        blendfile.close_all_cached()
    return found


def default_project(blend: Path, dependencies: Iterable[Path]) -> Path:
    """The deepest folder holding the scene and every file it uses."""
    paths = [str(blend.parent), *(str(p.parent) for p in dependencies)]
    return Path(os.path.commonpath(paths))


def pack(
    blend: Path, project: Path | None = None, frames: Sequence[int] | None = None
) -> PackedProject:
    """Plan the job's tree for `blend`; rewrite copies of the .blend files that need it.

    `project`: the folder whose layout the tree keeps (default: the deepest folder
    holding the scene and all it uses). `frames`: the frames the job renders, which say
    the frames of an image sequence it needs (None: the gaps between its files). Missing
    files are listed, not fatal: the caller decides (`--allow-missing`).
    """
    blend = bpathlib.make_absolute(blend)
    readable(blend)
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
        packer.progress_cb = _BoundedOpens()
        with packer, _quiet_tracer():
            packer.strategise()
            users = _ImageUsers()
            missing = sorted(
                {path for usage in packer.usages for path in _usage_files(usage, frames, users)[1]}
            )
            packer.execute()
            files = _collect(packer, target, workdir)
            main_file = blend.relative_to(project).as_posix()
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
