"""The driver: runs *inside* Blender and renders what the worker asks, reporting events.

Started as `blender -b --factory-startup -Y --python driver.py --` (an installed Blender)
or `python driver.py` (the `bpy` module). It reads one JSON command a line on stdin and
writes one JSON event a line on stdout, each behind MARK so events stand out from
Blender's own chatter. Commands:

    {"cmd": "open", "blend": PATH, "remap": [[FROM_ROOT, TO_ROOT], ..]}
    {"cmd": "render", "frames": [..], "output_dir": DIR, "file_stem": "frame_",
     "output_format": "PNG"|"JPEG"|"OPEN_EXR"|null, "resolution_percentage": int|null,
     "samples": int|null, "threads": int|null, "engine": str|null,
     "device": "CPU"|"CUDA"|"OPTIX"|"HIP"|"ONEAPI"|"METAL"|null, "gpu": int|null,
     "tile": {"column", "row", "columns", "rows", "overlap"}|null, "previews": bool}
    {"cmd": "devices"}   -> {"event": "devices", "devices": [{"type", "name", "id"}]}
    {"cmd": "display", "source": PATH, "target": PATH, "width": int, "height": int}
                         -> {"event": "displayed", "target": PATH}
    {"cmd": "quit"}

One process can take many commands, so a Blender session can outlive one task. The file
is opened with use_scripts=False: Python embedded in a .blend never runs here.

This file must run on every supported Blender's Python (3.10 for Blender 3.4): standard
library and bpy only, no newer syntax, no farmhand imports.
"""

import array
import contextlib
import json
import os
import sys
import time
import traceback

import bpy

MARK = "@@farmhand@@ "
EXTENSIONS = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "OPEN_EXR": ".exr",
    "OPEN_EXR_MULTILAYER": ".exr",
    "TIFF": ".tif",
    "WEBP": ".webp",
    "BMP": ".bmp",
}
"""The scene formats rendered as they are: those the worker and the manager can verify
and thumbnail (farmhand.shared.images.KEPT_FORMATS, which must say the same). Any other
(Targa, JPEG 2000, DPX, Cineon, Radiance HDR, Iris, a video) is rendered as PNG."""


def emit(event, **fields):
    fields["event"] = event
    sys.stdout.write("\n" + MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


def scene_facts(scene):
    render = scene.render
    return {
        "scene": scene.name,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
        "frame_step": scene.frame_step,
        "resolution_x": render.resolution_x,
        "resolution_y": render.resolution_y,
        "resolution_percentage": render.resolution_percentage,
        "engine": render.engine,
        "fps": scene.render.fps,
        "fps_base": scene.render.fps_base,
        "output_format": render.image_settings.file_format,
        "has_camera": scene.camera is not None,
        "samples": scene_samples(scene),
        "view_layer": picture_layer(scene),
        "view": describe_view(scene),
    }


def picture_layer(scene):
    """The view layer whose picture Blender shows and saves for a frame (compositing
    aside): the first of the scene's view layers set to render. A multilayer EXR holds
    every rendered layer, and OpenEXR's sorted channel names lose which one that was."""
    for layer in scene.view_layers:
        if layer.use:
            return layer.name
    return None


def describe_view(scene):
    """The scene's colour management in a few words, for the task's log."""
    view = scene.view_settings
    return "%s view, look %s, exposure %g, gamma %g%s on a %s display" % (
        view.view_transform,
        view.look,
        view.exposure,
        view.gamma,
        ", curves" if view.use_curve_mapping else "",
        scene.display_settings.display_device,
    )


def scene_samples(scene):
    """Render samples of the scene's engine (Cycles or EEVEE), None for other engines."""
    if scene.render.engine == "CYCLES":
        return scene.cycles.samples
    if scene.render.engine.startswith("BLENDER_EEVEE") and hasattr(scene, "eevee"):
        return scene.eevee.taa_render_samples
    return None


# The .blend the last `open` loaded, or None. Rendering without one would render Blender's
# default startup scene (a full-HD cube, minutes per frame) after a failed open.
STATE = {"blend": None, "frame": None}


@bpy.app.handlers.persistent
def print_status_line(stats, *_):
    """Blender's executables print `Fra:1 Mem:… | Sample 5/16` status lines, which the
    worker reads sample progress from; the bpy module prints none, but it does pass the
    same text (without the frame) to `render_stats` handlers. Printed in the
    executables' form, progress within a frame reads alike from both. Persistent: opening
    a file clears the other handlers."""
    if STATE["frame"] is not None:
        sys.stdout.write("Fra:%d | %s\n" % (STATE["frame"], stats))
        sys.stdout.flush()


def cmd_open(command):
    STATE["blend"] = None
    bpy.ops.wm.open_mainfile(filepath=command["blend"], load_ui=False, use_scripts=False)
    remap_paths(command.get("remap") or [])
    STATE["blend"] = command["blend"]
    emit("opened", **scene_facts(bpy.context.scene))


def _windows_root(root):
    return root[1:2] == ":" or root.startswith("\\\\") or "\\" in root


def remapped(path, pairs):
    """`path` moved from one shared-storage root to another (farmhand.shared.pathmap's
    rules: component boundaries, Windows roots without case and with either slash)."""
    if not path or path.startswith("//"):
        return None
    for source, target in pairs:
        windows = _windows_root(source)
        candidate = path.replace("\\", "/") if windows else path
        root = (source.replace("\\", "/") if windows else source).rstrip("/")
        a, b = (candidate.casefold(), root.casefold()) if windows else (candidate, root)
        if a == b or a.startswith(b + "/"):
            rest = candidate[len(root) :].lstrip("/")
            sep = "\\" if _windows_root(target) else "/"
            base = target.rstrip("\\/")
            return base + (sep + rest.replace("/", sep) if rest else "")
    return None


FILE_DATABLOCKS = ("images", "sounds", "fonts", "movieclips", "cache_files", "volumes")
"""The bpy.data collections whose datablocks name a file by `filepath`."""

MAX_LIBRARY_RELOADS = 256
"""Reloads one `open` may make while remapping libraries (see settle_libraries)."""


def remap_paths(pairs):
    """Rewrite absolute paths saved in the file from another platform's shared-storage
    root to this one's: libraries (reloaded), images, sounds, fonts, clips, caches and
    volumes, in the main file and inside linked libraries, and say how many in the log.

    Libraries come first: a reload reads a library's datablocks afresh, which would undo
    paths rewritten inside it before.
    """
    if not pairs:
        return
    libraries = settle_libraries(lambda: list(bpy.data.libraries), pairs, relocate)
    files = remap_datablock_paths(pairs)
    inside = libraries["inside"] + files["inside"]
    print(
        "farmhand: remapped %d shared-storage paths in the .blend (%d inside linked libraries)"
        % (libraries["main"] + files["main"] + inside, inside),
        flush=True,
    )
    left = [library.name for library in bpy.data.libraries if remapped(library.filepath, pairs)]
    if left or files["refused"]:
        print(
            "farmhand: still on another platform's root: libraries: %s; other paths: %d"
            % (", ".join(left) or "none", files["refused"]),
            flush=True,
        )


def relocate(library, path):
    """Point a library at `path` and read it from there (its linked datablocks too)."""
    library.filepath = path
    library.reload()


def next_library(libraries, pairs, handled):
    """The first of `libraries` on another root whose name is not in `handled`, and its
    new path; None when there is none."""
    for library in libraries:
        new = remapped(library.filepath, pairs)
        if new and library.name not in handled:
            return library, new
    return None


def settle_libraries(libraries, pairs, move, limit=MAX_LIBRARY_RELOADS):
    """Remap libraries and reload each (`move(library, new_path)`) until none is left on
    another root; how many were remapped: {"main": linked by the main file, "inside":
    linked by a library}.

    A library linked by a library (nested) only appears in `libraries()` once its parent
    has been reloaded from the new root, with the path saved in the parent: so the list
    is asked for again after every reload, which also never touches a Library that a
    reload freed. Each library (by name, unique among libraries) is remapped at most
    once and at most `limit` reloads are made, so libraries that link each other in a
    cycle cannot keep Blender busy; any left over are named in the log.
    """
    handled = set()
    counts = {"main": 0, "inside": 0}
    while len(handled) < limit:
        found = next_library(libraries(), pairs, handled)
        if found is None:
            break
        library, new = found
        handled.add(library.name)
        counts["main" if getattr(library, "parent", None) is None else "inside"] += 1
        move(library, new)
    return counts


def file_datablocks():
    """Every datablock that names a file on disk (not packed), local or linked."""
    for collection in FILE_DATABLOCKS:
        for item in getattr(bpy.data, collection, []):
            if getattr(item, "packed_file", None) is None:
                yield item


def remap_datablock_paths(pairs):
    """Rewrite the paths of datablocks that name a file on another root; how many:
    {"main": the file's own, "inside": linked from libraries, "refused": not taken}.

    The interface keeps linked datablocks read-only, but Blender's Python API sets their
    properties in memory (3.4 and 5.0; tests/integration/test_shared_storage.py renders
    a library's own texture through it): enough to render, and nothing is ever saved, so
    no copy of a library is needed. A Blender that refused would leave the path as it
    was, which is counted, not fatal: the render shows what is missing.
    """
    counts = {"main": 0, "inside": 0, "refused": 0}
    for item in file_datablocks():
        new = remapped(getattr(item, "filepath", ""), pairs)
        if not new:
            continue
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            item.filepath = new
        if item.filepath != new:
            counts["refused"] += 1
        else:
            counts["main" if item.library is None else "inside"] += 1
    return counts


GPU_KINDS = ("CUDA", "OPTIX", "HIP", "ONEAPI", "METAL")


def cycles_preferences():
    addon = bpy.context.preferences.addons.get("cycles")
    return addon.preferences if addon is not None else None


def gpu_devices(kind):
    """Cycles' devices of one kind (CUDA, OPTIX...) on this machine, as Blender sees them."""
    prefs = cycles_preferences()
    if prefs is None:
        return []
    try:
        devices = prefs.get_devices_for_type(kind)
    except (TypeError, ValueError, AttributeError):
        return []  # a kind this Blender does not know (METAL off macOS, ONEAPI in old ones)
    return [device for device in devices if device.type == kind]


def cmd_devices(_command):
    found = [{"type": "CPU", "name": "CPU", "id": "CPU"}]
    for kind in GPU_KINDS:
        for device in gpu_devices(kind):
            found.append({"type": kind, "name": device.name, "id": device.id})
    emit("devices", devices=found, version=bpy.app.version_string)


def apply_device(scene, device, gpu):
    """Render Cycles on `device` (all of its GPUs, or only number `gpu`)."""
    if scene.render.engine != "CYCLES":
        return
    if not device or device == "CPU":
        scene.cycles.device = "CPU"
        return
    devices = gpu_devices(device)
    if not devices:
        raise RuntimeError("Blender sees no %s device on this machine" % device)
    if gpu is not None and gpu >= len(devices):
        raise RuntimeError("there is no %s GPU %d (Blender sees %d)" % (device, gpu, len(devices)))
    prefs = cycles_preferences()
    prefs.compute_device_type = device
    chosen = devices if gpu is None else [devices[gpu]]
    for candidate in prefs.devices:
        candidate.use = any(candidate.id == wanted.id for wanted in chosen)
    scene.cycles.device = "GPU"


def set_file_format(settings, file_format):
    """Set an image format; Blender 5 first needs the matching `media_type`.

    In Blender 5 the formats offered depend on `media_type` (IMAGE, MULTI_LAYER_IMAGE,
    VIDEO): setting PNG on a scene whose media type is VIDEO fails with `enum "PNG" not
    found in ('FFMPEG')`. Blender 3.4 has no media type.
    """
    if hasattr(settings, "media_type"):
        wanted = "MULTI_LAYER_IMAGE" if file_format == "OPEN_EXR_MULTILAYER" else "IMAGE"
        if settings.media_type != wanted:
            settings.media_type = wanted
    settings.file_format = file_format


def apply_overrides(scene, command):
    render = scene.render
    if command.get("engine"):
        render.engine = command["engine"]
    if command.get("output_format"):
        set_file_format(render.image_settings, command["output_format"])
    elif render.image_settings.file_format not in EXTENSIONS:
        # A scene set up to write a video (FFMPEG) or an image format the farm cannot
        # verify: a farm collects frames it can check (and assembles a video afterwards
        # when asked), so render lossless frames instead of failing the task.
        sys.stdout.write(
            "farmhand: the scene writes %s, which the farm does not collect; rendering "
            "PNG frames instead\n" % render.image_settings.file_format
        )
        set_file_format(render.image_settings, "PNG")
    if command.get("resolution_percentage"):
        render.resolution_percentage = int(command["resolution_percentage"])
    if command.get("threads"):
        render.threads_mode = "FIXED"
        render.threads = int(command["threads"])
    if render.engine == "CYCLES":
        apply_device(scene, command.get("device"), command.get("gpu"))
        if command.get("samples"):
            scene.cycles.samples = int(command["samples"])
    elif command.get("samples") and hasattr(scene, "eevee"):
        scene.eevee.taa_render_samples = int(command["samples"])
    render.use_file_extension = True


# Settings a render command may override, in the order they must be restored (Blender 5's
# media_type before file_format, the engine before the engine's own settings).
OVERRIDABLE = (
    ("render", "engine"),
    ("image_settings", "media_type"),
    ("image_settings", "file_format"),
    ("image_settings", "color_depth"),
    ("render", "resolution_percentage"),
    ("render", "threads_mode"),
    ("render", "threads"),
    ("render", "filepath"),
    ("render", "use_file_extension"),
    ("cycles", "device"),
    ("cycles", "samples"),
    ("eevee", "taa_render_samples"),
    ("render", "use_border"),
    ("render", "use_crop_to_border"),
    ("render", "border_min_x"),
    ("render", "border_max_x"),
    ("render", "border_min_y"),
    ("render", "border_max_y"),
)


def tile_edges(size, count, index):
    """Pixels [first, last) of part `index` of `count` along `size`: the parts are whole
    pixels, tile the frame exactly, and differ in size by at most one."""
    return size * index // count, size * (index + 1) // count


def check_tile_grid(width, height, tile):
    """Refuse a grid with more columns than the frame has pixels across, or more rows
    than it has down: some of its tiles would be empty, which Blender cannot render and
    the worker cannot cut, so every tile of it fails here, before anything is rendered,
    with the one reason that helps (the frame's size and the most the grid may have)."""
    for count, size, what, side in (
        (tile["columns"], width, "columns", "wide"),
        (tile["rows"], height, "rows", "high"),
    ):
        if count > size:
            raise ValueError(
                "the frame is %dx%d px: %d %s of tiles would make tiles under 1 px %s; "
                "use at most %d %s" % (width, height, count, what, side, size, what)
            )


def apply_tile(render, width, height, tile):
    """Render this tile of the frame (column and row from the top left) and `overlap`
    pixels around it, cropped to that; the tile's size, and where it lies in what Blender
    writes: [left, top, rendered width, rendered height] (the worker cuts it out).

    The overlap lets the denoiser and the compositor see past the tile's edges, so the
    merged frame shows no seams. Blender's border is a fraction of the frame, y from the
    bottom, turned into pixels by multiplying by the size; a quarter pixel inside each
    edge gives the same whole pixel whether Blender truncates or rounds (the worker
    checks the rendered size, and the merge each tile's place).
    """
    check_tile_grid(width, height, tile)
    x0, x1 = tile_edges(width, tile["columns"], tile["column"])
    top, bottom = tile_edges(height, tile["rows"], tile["row"])
    overlap = int(tile.get("overlap") or 0)
    left, right = max(0, x0 - overlap), min(width, x1 + overlap)
    upper, lower = max(0, top - overlap), min(height, bottom + overlap)
    render.use_border = True
    render.use_crop_to_border = True
    render.border_min_x = (left + 0.25) / width
    render.border_max_x = min((right + 0.25) / width, 1.0)
    render.border_min_y = (height - lower + 0.25) / height
    render.border_max_y = min((height - upper + 0.25) / height, 1.0)
    crop = [x0 - left, top - upper, right - left, lower - upper]
    return x1 - x0, bottom - top, crop


def border_pixel(fraction, size):
    """A border edge in pixels as Blender reckons it (render_init_from_main): the
    single-precision product of the fraction and the size, truncated."""
    return int(array.array("f", [fraction * size])[0])


def cropped_size(render, width, height):
    """The size Blender writes a `width` x `height` frame at: the scene's own render
    border when "Crop to Render Region" is on (`blender -b -a` writes only the border's
    pixels), else the whole frame (a border without crop is black around it)."""
    if not (render.use_border and render.use_crop_to_border):
        return width, height
    return (
        border_pixel(render.border_max_x, width) - border_pixel(render.border_min_x, width),
        border_pixel(render.border_max_y, height) - border_pixel(render.border_min_y, height),
    )


def rendered_views(render):
    """The views Blender renders and saves, in its order, when it renders more than one
    (stereoscopy or multi-view), else []: a view set to render, and in Stereo 3D mode
    only `left` and `right` (BKE_scene_multiview_is_render_view_active)."""
    if not render.use_multiview:
        return []
    views = [
        view
        for view in render.views
        if view.use and (render.views_format == "MULTIVIEW" or view.name in ("left", "right"))
    ]
    return views if len(views) > 1 else []


def views_in_files(settings):
    """Does Blender write each view to a file of its own (`frame_0001_L.png`, ...)?
    With Individual views it does, for every format, multilayer OpenEXR included (3.4
    and 5.0); OpenEXR and multilayer OpenEXR set to Multi-View hold every view in one
    file; a Stereo 3D image format combines two views in one picture."""
    return settings.views_format == "INDIVIDUAL"


def stereo_size(settings, width, height):
    """The size of a picture combining two `width` x `height` views as the image format's
    Stereo 3D mode lays them out (IMB_stereo3d_write_dimensions): side by side twice as
    wide, top-bottom twice as high (unless squeezed), anaglyph and interlace the same."""
    stereo = settings.stereo_3d_format
    squeezed = bool(getattr(stereo, "use_squeezed_frame", False))
    if stereo.display_mode == "SIDEBYSIDE" and not squeezed:
        return width * 2, height
    if stereo.display_mode == "TOPBOTTOM" and not squeezed:
        return width, height * 2
    return width, height


def collect_views(views, base, extension, views_dir, number):
    """Each view Blender wrote to a file of its own: the first view becomes the frame
    (`base` + extension: thumbnails, videos and counting take it), every other view moves
    to `views_dir/<number><suffix><extension>` (`views/0001_R.png`) to go with it."""
    first = base + views[0].file_suffix + extension
    if os.path.exists(first):
        os.replace(first, base + extension)
    others = []
    if views[1:]:
        os.makedirs(views_dir, exist_ok=True)
    for view in views[1:]:
        written = base + view.file_suffix + extension
        target = os.path.join(views_dir, number + view.file_suffix + extension)
        if os.path.exists(written):
            os.replace(written, target)
        others.append(target)
    return others


def owners(scene):
    return {
        "render": scene.render,
        "image_settings": scene.render.image_settings,
        "cycles": getattr(scene, "cycles", None),
        "eevee": getattr(scene, "eevee", None),
    }


def snapshot(scene):
    """The overridable settings as the file has them, to put back after a render command.

    One Blender may serve many commands (a persistent session): without this, one task's
    EXR or 50% override would leak into the next task's render of the same file.
    """
    found = owners(scene)
    saved = []
    for owner, name in OVERRIDABLE:
        if found[owner] is not None and hasattr(found[owner], name):
            saved.append((owner, name, getattr(found[owner], name)))
    return saved


def restore(scene, saved):
    found = owners(scene)
    for owner, name, value in saved:
        try:
            if getattr(found[owner], name) != value:
                setattr(found[owner], name, value)
        except (AttributeError, TypeError, ValueError) as error:
            sys.stdout.write("farmhand: could not restore %s.%s: %s\n" % (owner, name, error))


def file_output_nodes(scene):
    """The compositor's File Output nodes that run in a render (Blender 3.4 and 5.0)."""
    if not scene.render.use_compositing:
        return []
    if hasattr(scene, "compositing_node_group"):  # Blender 5
        tree = scene.compositing_node_group
    else:  # Blender 3.4 / 4.x
        tree = scene.node_tree if scene.use_nodes else None
    if tree is None:
        return []
    return [node for node in tree.nodes if node.type == "OUTPUT_FILE" and not node.mute]


def redirect_file_outputs(scene, passes_dir):
    """Point every File Output node into `passes_dir/<node>/`; the old paths, to restore.

    A .blend names its artist's folders (`/home/anna/shot/passes/`): on a worker the files
    must land where the task's outputs are collected, never anywhere else on the machine.
    Blender joins each slot's own path to the node's folder, so a slot path with `..`
    (`../../../tmp/x/pwn_`) would climb out of it: each is made a plain relative path
    (`contained`) and the change said in the task's log.
    """
    saved = []
    for index, node in enumerate(file_output_nodes(scene)):
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in node.name) or "node"
        target = os.path.join(passes_dir, "%02d-%s" % (index, name)) + os.sep
        attribute = "directory" if hasattr(node, "directory") else "base_path"
        saved.append((node, attribute, getattr(node, attribute)))
        setattr(node, attribute, target)
        for owner, field in slot_paths(node):
            path = getattr(owner, field)
            safe = contained(path)
            if safe == path:
                continue
            saved.append((owner, field, path))
            setattr(owner, field, safe)
            print(
                "farmhand: File Output node %r: its path %r is written as %r, inside the "
                "task's passes folder (a worker writes nowhere else)" % (node.name, path, safe),
                flush=True,
            )
    return saved


def slot_paths(node):
    """(owner, attribute) of each path a File Output node joins to its folder: the file
    name and each item's name in Blender 5, each file slot's path in 3.4 / 4.x. (A
    multilayer EXR's layer names name layers in the file, never a path.)"""
    if hasattr(node, "file_output_items"):  # Blender 5
        return [(node, "file_name")] + [(item, "name") for item in node.file_output_items]
    return [(slot, "path") for slot in node.file_slots]


def contained(path):
    """`path` as a plain relative path, so that joined to a folder it stays inside it:
    its root or drive (`/`, `C:`, Blender's `//`) and its `.` and `..` parts dropped, the
    rest kept (`../../tmp/x/pwn_` -> `tmp/x/pwn_`), a final separator too (a folder)."""
    text = path.replace("\\", "/")
    if len(text) >= 2 and text[1] == ":" and text[0].isalpha():
        text = text[2:]
    parts = [part for part in text.split("/") if part not in ("", ".", "..")]
    safe = "/".join(parts)
    if safe and text.endswith("/"):
        safe += "/"
    return path if safe == path.replace("\\", "/") else safe  # kept as written when safe


def files_under(folder):
    """{path: (mtime, size)} of every file below `folder`."""
    found = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def written_for_frame(before, after, frame):
    """The files a render wrote (new or rewritten), each under a name with its frame.

    A File Output node whose path has no `#` writes the same name every frame (Blender 5
    does this by default): such a file is renamed with the frame number, so the next
    frame cannot overwrite it before it is uploaded.
    """
    number = "%04d" % frame if frame >= 0 else "m%04d" % -frame
    written = []
    for path in sorted(after):
        if before.get(path) == after[path]:
            continue
        if number not in os.path.basename(path):
            stem, extension = os.path.splitext(path)
            target = "%s%s%s" % (stem, number, extension)
            os.replace(path, target)
            path = target
        written.append(path)
    return written


IMAGE_SETTINGS = (
    "media_type",
    "file_format",
    "views_format",
    "color_mode",
    "color_depth",
    "exr_codec",
    "quality",
    "compression",
    "color_management",
)
"""What switching the output format (`saving_as`) may change, in the order to put it back.
`views_format` after `file_format`: a JPEG cannot hold Multi-View, so Blender turns an
EXR's Multi-View into Individual for the preview, and the next frame would be saved a file
a view."""


@contextlib.contextmanager
def saving_as(scene, file_format, **values):
    """The scene's output format switched to `file_format` (with `values`) for a save,
    then put back exactly: `Image.save_render` writes in the scene's format, through the
    scene's colour management (view transform, look, exposure, gamma, curves). The
    scene's own colour management, not an override of its output's (Blender 4+): an
    override set up for the EXR it renders is no view of the scene."""
    settings = scene.render.image_settings
    saved = [(name, getattr(settings, name)) for name in IMAGE_SETTINGS if hasattr(settings, name)]
    try:
        set_file_format(settings, file_format)
        if hasattr(settings, "color_management"):
            settings.color_management = "FOLLOW_SCENE"
        for name, value in values.items():
            setattr(settings, name, value)
        yield
    finally:
        for name, value in saved:
            try:
                if getattr(settings, name) != value:
                    setattr(settings, name, value)
            except (AttributeError, TypeError, ValueError):
                pass  # not valid for the restored format: Blender chose its default


def save_preview(scene, path, longest=512):
    """A small JPEG of the render result, through the scene's colour management.

    Made by Blender, so an EXR frame's preview shows the view transform (Filmic, AgX…),
    look and exposure the artist chose. The render result belongs to the rendered scene,
    so its output format is switched to JPEG for the save and then put back exactly.
    """
    result = bpy.data.images.get("Render Result")
    if result is None:
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    views = rendered_views(scene.render)
    # A JPEG holds one view: an EXR's Multi-View left as it is fails the save on 3.4.
    one_a_view = {"views_format": "INDIVIDUAL"} if views else {}
    try:
        with saving_as(scene, "JPEG", color_mode="RGB", quality=85, **one_a_view):
            result.save_render(filepath=path, scene=scene)
    except RuntimeError:
        # A result of several views (stereo) is saved as a file a view, the view's suffix
        # before the extension (`0001_L.jpg`, 3.4 and 5.0), and then reported as not
        # saved, the name asked for being missing: the first view is the preview.
        if not views:
            raise
        stem, extension = os.path.splitext(path)
        written = [stem + view.file_suffix + extension for view in views]
        if not os.path.exists(written[0]):
            raise
        os.replace(written[0], path)
        for other in written[1:]:
            with contextlib.suppress(OSError):
                os.remove(other)
    image = bpy.data.images.load(path)
    try:
        width, height = image.size
        if max(width, height) > longest:
            scale = float(longest) / max(width, height)
            image.scale(max(1, int(width * scale)), max(1, int(height * scale)))
            image.filepath_raw = path
            image.file_format = "JPEG"
            image.save()
    finally:
        bpy.data.images.remove(image)
    return path


def cmd_display(command):
    """Turn a scene-linear picture into what the open scene shows: the worker's video of
    OpenEXR frames, which hold linear light, looks as Blender's own PNG frames would.

    `source` holds `width` x `height` RGBA pixels as 32-bit floats, bottom row first (as
    Blender keeps them). Blender saves them as a 16-bit PNG through the scene's colour
    management, exactly as it saves a render, reads that back as plain numbers and
    writes them to `target` in the same layout, display values from 0 to 1. Both images
    are removed again: a session's later renders see none of this.
    """
    if STATE["blend"] is None:
        raise RuntimeError("no .blend file is open, so there is no scene to show the frame with")
    scene = bpy.context.scene
    width, height = int(command["width"]), int(command["height"])
    pixels = array.array("f")
    with open(command["source"], "rb") as source:
        pixels.frombytes(source.read())
    if len(pixels) != width * height * 4:
        raise ValueError("%s does not hold %dx%d RGBA floats" % (command["source"], width, height))
    png = command["target"] + ".png"
    linear = bpy.data.images.new("farmhand display", width, height, float_buffer=True)
    shown = None
    try:
        linear.pixels.foreach_set(pixels)
        with saving_as(scene, "PNG", color_mode="RGB", color_depth="16", compression=0):
            linear.save_render(filepath=png, scene=scene)
        shown = bpy.data.images.load(png)
        shown.colorspace_settings.is_data = True  # the PNG's numbers, not linear light
        shown.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(linear)
        if shown is not None:
            bpy.data.images.remove(shown)
        with contextlib.suppress(OSError):
            os.remove(png)
    with open(command["target"], "wb") as target:
        pixels.tofile(target)
    emit("displayed", target=command["target"])


def cmd_render(command):
    if STATE["blend"] is None:
        raise RuntimeError("nothing to render: no .blend file is open (did `open` fail?)")
    scene = bpy.context.scene
    saved = snapshot(scene)
    nodes = []
    try:
        nodes = redirect_file_outputs(scene, os.path.join(command["output_dir"], "passes"))
        render_frames(scene, command)
    finally:
        for node, attribute, value in nodes:
            setattr(node, attribute, value)
        restore(scene, saved)


EXR_FORMATS = ("OPEN_EXR", "OPEN_EXR_MULTILAYER")


def set_tile_format(settings):
    """Make a tile's image settings (after `apply_overrides`: the job's format, or the
    scene's when the job keeps the .blend's) ones a tile can be cut and merged in.

    Tiles are cut out of their overlap and merged without loss, so only formats the
    worker can do that with are rendered: OpenEXR, the job's or the scene's, is kept with
    the scene's half or float depth, codec and passes; anything else (PNG at 16 bits,
    JPEG, TIFF, ...) becomes 8-bit PNG, which Pillow cuts and merges exactly. The manager
    allows these and no other (`tile_extensions` in shared/schemas.py)."""
    if settings.file_format in EXR_FORMATS:
        return
    was = (settings.file_format, settings.color_depth)
    if settings.file_format != "PNG":
        set_file_format(settings, "PNG")
    settings.color_depth = "8"
    if was != ("PNG", "8"):
        # Said in the task's log: a 16-bit scene merged into an 8-bit still is a loss
        # the artist should hear of, not find in print.
        print(
            "farmhand: tiles are rendered as 8-bit PNG, not %s at %s bits as the scene "
            "writes (tiles are cut and merged losslessly only as 8-bit PNG or OpenEXR: "
            "ask for OPEN_EXR to keep more)" % was,
            flush=True,
        )


def render_frames(scene, command):
    apply_overrides(scene, command)
    render = scene.render
    tile = command.get("tile")
    views = rendered_views(render)
    if tile and views:
        raise ValueError(
            "stereo/multiview output is not supported in tiles: render this still without "
            "tiles, or turn Stereoscopy off in the scene's Output properties"
        )
    if tile:
        set_tile_format(render.image_settings)
    extension = EXTENSIONS.get(render.image_settings.file_format)
    if extension is None:
        raise ValueError(
            "output format %s is not an image format farmhand collects"
            % render.image_settings.file_format
        )
    width = render.resolution_x * render.resolution_percentage // 100
    height = render.resolution_y * render.resolution_percentage // 100
    crop = None
    if tile:
        width, height, crop = apply_tile(render, width, height, tile)
    else:
        width, height = cropped_size(render, width, height)
    separate = bool(views) and views_in_files(render.image_settings)
    if (
        views
        and render.image_settings.views_format == "STEREO_3D"
        and render.image_settings.file_format != "OPEN_EXR_MULTILAYER"
    ):
        width, height = stereo_size(render.image_settings, width, height)
    output_dir = command["output_dir"]
    os.makedirs(output_dir, exist_ok=True)
    stem = command.get("file_stem", "frame_")
    passes_dir = os.path.join(output_dir, "passes")
    previews = command.get("previews", True)
    for frame in command["frames"]:
        emit("frame_started", frame=frame)
        scene.frame_set(frame)
        name = "%s%04d" % (stem, frame) if frame >= 0 else "%sm%04d" % (stem, -frame)
        base = os.path.join(output_dir, name)
        render.filepath = base
        before = files_under(passes_dir)
        started = time.monotonic()
        STATE["frame"] = frame
        try:
            bpy.ops.render.render(write_still=True)
        finally:
            STATE["frame"] = None
        seconds = round(time.monotonic() - started, 3)
        preview = None
        if previews:
            preview = save_preview(scene, os.path.join(output_dir, "previews", name + ".jpg"))
        extras = written_for_frame(before, files_under(passes_dir), frame)
        if separate:
            number = name[len(stem) :]
            views_dir = os.path.join(output_dir, "views")
            extras += collect_views(views, base, extension, views_dir, number)
        emit(
            "frame_saved",
            frame=frame,
            path=base + extension,
            seconds=seconds,
            width=width,
            height=height,
            preview=preview,
            extras=extras,
            crop=crop,
        )
    emit("render_done", frames=len(command["frames"]))


def main():
    if not bpy.app.binary_path:  # the bpy module (an executable prints the lines itself)
        bpy.app.handlers.render_stats.append(print_status_line)
    emit("ready", version=bpy.app.version_string)
    handlers = {
        "open": cmd_open,
        "render": cmd_render,
        "devices": cmd_devices,
        "display": cmd_display,
    }
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            command = json.loads(line)
            name = command.get("cmd")
            if name == "quit":
                break
            handler = handlers.get(name)
            if handler is None:
                raise ValueError("unknown command %r" % (name,))
            handler(command)
        except Exception as error:  # reported, never swallowed: the worker fails the task
            message = str(error).strip() or error.__class__.__name__
            emit("error", message=message, traceback=traceback.format_exc())
    emit("bye")


if __name__ == "__main__":  # imported by the unit tests, with a stand-in bpy
    main()
