"""What a .blend's scene says about how it renders, read without Blender, and the submit
rule that follows from it: a scene rendering several views (stereo, multi-view) is not
rendered in tiles.

Blender renders a stereo scene as two pictures a frame (a multi-view scene as one a
view); a tile task cuts and merges one picture, so the worker's driver refuses a tile of
such a scene (`render_frames`). It only finds out once a tile task runs, though, and the
job then spends every attempt failing before it fails. So each way of submitting asks
`tiles_refusal` first: the client (`farmhand submit` and the add-on through it,
`submit_blend`, `submit_shared` when the share's file is readable here) before anything
is packed or uploaded, and the manager on the stored main .blend (`main_blend_version`,
in a child process held to limits: `rendered_views_bounded`), so that a REST submission
is refused with a 400 too. A file this cannot read is let through: the worker's refusal
stays the last line of defence.

Read with blender-asset-tracer (BAT), which the client already uses to pack a .blend and
which opens the gzip and zstd files Blender saves; only the numbers in Blender's DNA are
read, and they are stored on disk, so they do not change between versions (the tests read
files saved by Blender 3.4 and 5.0).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from blender_asset_tracer import blendfile
from blender_asset_tracer.blendfile import iterators

log = logging.getLogger(__name__)

R_MULTIVIEW = 1 << 21
"""`RenderData.scemode` bit of Output properties > Stereoscopy (`render.use_multiview`)."""
SCE_VIEW_DISABLE = 1 << 0
"""`SceneRenderView.viewflag` bit of a view not set to render (`view.use` off)."""
SCE_VIEWS_FORMAT_MULTIVIEW = 1
"""`RenderData.views_format` of Multi-View; 0 is Stereo 3D."""
STEREO_VIEWS = ("left", "right")
"""The only views Blender renders in Stereo 3D mode, whatever others the scene lists."""


def active_scene(bfile: blendfile.BlendFile) -> blendfile.BlendFileBlock | None:
    """The `GLOB` block's `curscene`, which is what `blender -b file.blend` renders;
    the first `SC` block if the file names none. None when the scene it names is not in
    this file: a scene linked from a library is an `ID` block here, its settings are in
    the library, and answering for the file's first local scene instead would judge a
    scene Blender does not render."""
    for glob in bfile.find_blocks_from_code(b"GLOB"):
        scene = glob.get_pointer(b"curscene", default=None)
        if scene is not None:
            return scene if scene.code == b"SC" else None
    scenes = bfile.find_blocks_from_code(b"SC")
    return scenes[0] if scenes else None


def rendered_views(path: Path) -> list[str] | None:
    """The names of the views the scene of `path` renders when it renders more than one
    (stereoscopy or multi-view), else []; None when the file cannot be read.

    Blender's rule (BKE_scene_multiview_is_render_view_active), as the worker's driver
    applies it (`rendered_views` in worker/blender/driver.py): with Stereoscopy on, each
    view set to render, and in Stereo 3D mode only `left` and `right`."""
    try:
        with blendfile.BlendFile(path) as bfile:
            scene = active_scene(bfile)
            if scene is None:
                return None
            scemode = scene.get((b"r", b"scemode"))
            if not isinstance(scemode, int) or not scemode & R_MULTIVIEW:
                return []
            every_view = scene.get((b"r", b"views_format")) == SCE_VIEWS_FORMAT_MULTIVIEW
            first = scene.get_pointer((b"r", b"views", b"first"), default=None)
            names = [
                str(view.get(b"name", as_str=True))
                for view in _each_once(iterators.listbase(first))
                if not view.get(b"viewflag") & SCE_VIEW_DISABLE
            ]
    except Exception as exc:  # BAT raises many kinds on a damaged or foreign file
        log.debug("cannot read the views of %s: %s", path, exc)
        return None
    views = [name for name in names if every_view or name in STEREO_VIEWS]
    return views if len(views) > 1 else []


def _each_once(
    blocks: Iterator[blendfile.BlendFileBlock],
) -> Iterator[blendfile.BlendFileBlock]:
    """`blocks`, refusing a list that comes back to a block it passed: BAT follows a
    damaged or crafted file's loop for ever, and the manager reads what any user sends."""
    seen: set[int] = set()
    for block in blocks:
        if block.addr_old in seen:
            raise ValueError(f"the list of views loops back at {block.addr_old:#x}")
        seen.add(block.addr_old)
        yield block


UNTRUSTED_MEMORY_BYTES = 1536 << 20
"""Address space for reading a file someone else sent: an honest scene of about 200 MB
takes some 900 MB to read; a larger one is let through to the worker unread."""
UNTRUSTED_CPU_SECONDS = 15
UNTRUSTED_WALL_SECONDS = 30.0
UNTRUSTED_WRITE_BYTES = 2 << 30
"""The largest decompressed copy of a gzip or zstd .blend BAT may write to read it."""


def rendered_views_bounded(path: Path) -> list[str] | None:
    """`rendered_views` of a file anyone may have crafted, as the manager reads uploads:
    in a child process held to `UNTRUSTED_*` memory, CPU, time and written bytes, with a
    scratch folder of its own for BAT's decompressed copy (removed however it ends).
    None, as for any file that cannot be read here, when it goes over them.

    BAT trusts a file's block sizes: a crafted block whose size points back at itself
    is read again and again, each copy kept (memory grew 200 MB a second until the
    manager died), and a few hundred KB of zstd decompress to gigabytes. In a process
    of its own, that costs one child its limits, not the manager its memory. How many run
    at once is the caller's to bound (the manager's `FileReads`): each may take
    `UNTRUSTED_MEMORY_BYTES`."""
    if os.name != "posix":
        return None
    with tempfile.TemporaryDirectory(prefix="farmhand-blendscene-") as scratch:
        child = subprocess.Popen(
            [sys.executable, "-m", "farmhand.shared.blendscene", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "TMPDIR": scratch},
        )
        try:
            out, err = child.communicate(timeout=UNTRUSTED_WALL_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            log.info("reading the views of %s took too long; not read", path)
            return None
    if child.returncode != 0:
        log.info("reading the views of %s failed (exit %s): %s", path, child.returncode,
                 err.decode(errors="replace").strip()[-300:])  # fmt: skip
        return None
    try:
        views = json.loads(out)
    except ValueError:
        return None
    if views is None or (isinstance(views, list) and all(isinstance(v, str) for v in views)):
        return views
    return None


def _read_held(path: str) -> None:
    """The child of `rendered_views_bounded`: its limits first, then the read, answered
    as JSON. Going over memory is a MemoryError, which `rendered_views` takes as a file
    it cannot read; over CPU or written bytes, the kernel ends the process."""
    import resource  # POSIX only; the client imports this module on every platform

    for limit, value in (
        (resource.RLIMIT_AS, UNTRUSTED_MEMORY_BYTES),
        (resource.RLIMIT_CPU, UNTRUSTED_CPU_SECONDS),
        (resource.RLIMIT_FSIZE, UNTRUSTED_WRITE_BYTES),
    ):
        resource.setrlimit(limit, (value, value))
    print(json.dumps(rendered_views(Path(path))))


def tiles_refusal(
    path: Path,
    tiled: bool,
    file: str,
    read: Callable[[Path], list[str] | None] = rendered_views,
) -> str | None:
    """Why a job asking for tiles (`tiled`) cannot render the .blend at `path` (named
    `file` in the message), or None: it is not tiled, its scene renders one view, or the
    file cannot be read here (the worker refuses it then). `read` is how: the manager
    reads what users send with `rendered_views_bounded`."""
    if not tiled:
        return None
    views = read(path)
    if not views:
        return None
    return (
        f"{file} renders {len(views)} views ({', '.join(views)}: Stereoscopy is on in its "
        "Output properties), and stereo/multi-view output is not supported in tiles: "
        "submit it without tiles, or turn Stereoscopy off in the scene's Output "
        "properties and save the file"
    )


if __name__ == "__main__":
    _read_held(sys.argv[1])
