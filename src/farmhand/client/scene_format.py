"""The output format a .blend's scene is saved with, read without running Blender.

`farmhand submit` does not start Blender, yet a scene saved as Targa or as a movie
renders PNG frames on the farm (`images.rendered_format`), and the person submitting
should hear so before uploading, as the web form and the add-on say it. The client
already reads .blend files with blender-asset-tracer (BAT) to pack them; this reads the
active scene's `r.im_format.imtype` the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from blender_asset_tracer import blendfile

from farmhand.shared.blendbounds import check_blend
from farmhand.shared.blendscene import active_scene

log = logging.getLogger(__name__)

IMTYPE_NAMES: dict[int, str] = {
    0: "TARGA",
    1: "IRIS",
    4: "JPEG",
    14: "TARGA_RAW",
    15: "AVI_RAW",
    16: "AVI_JPEG",
    17: "PNG",
    20: "BMP",
    21: "HDR",
    22: "TIFF",
    23: "OPEN_EXR",
    24: "FFMPEG",
    26: "CINEON",
    27: "DPX",
    28: "OPEN_EXR_MULTILAYER",
    30: "JPEG2000",
    35: "WEBP",
}
"""Blender's `R_IMF_IMTYPE_*` numbers (DNA_scene_types.h), as stored in the .blend, to the
names its Python gives them (`image_settings.file_format`). The numbers are on disk, so
they do not change between versions: the tests save every format Blender 3.4 and 5.0
offer and check that each reads back as Blender names it."""

MOVIE_FORMATS = frozenset({"FFMPEG", "AVI_RAW", "AVI_JPEG"})
"""Formats that write one movie file, not frames: the farm renders their frames as PNG
and makes a movie only when the job asks for a video."""


def saved_format(path: Path) -> str | None:
    """The output format (Blender's Python name) of the scene Blender renders when it
    opens `path`: the one it was saved showing (the file's global `curscene`), else its
    first scene. None when that cannot be read (a number this table does not know, a file
    BAT cannot parse, one past `check_blend`'s bounds): the caller only warns with it, so
    it never fails a submit."""
    try:
        check_blend(path)  # the pack that follows says why, if not
        with blendfile.BlendFile(path) as bfile:
            scene = active_scene(bfile)
            if scene is None:
                return None
            imtype = scene.get((b"r", b"im_format", b"imtype"))
    except Exception as exc:  # BAT raises many kinds on a damaged or foreign file
        log.debug("cannot read the output format of %s: %s", path, exc)
        return None
    return IMTYPE_NAMES.get(imtype) if isinstance(imtype, int) else None
