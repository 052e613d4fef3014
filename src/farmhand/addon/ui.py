"""What Blender shows: preferences, the Render Properties panel, its four buttons.

Submitting takes as long as packing and uploading take, so the CLI runs in a thread and
Blender's UI keeps working: the thread only posts the CLI's events to `INBOX`, and a
`bpy.app.timers` callback applies them on Blender's main thread (bpy is not
thread-safe). In background mode (`blender -b`, the bpy module) no event loop runs
timers and a script wants the outcome when the call returns, so the operator waits for
the thread, and errors become its error report (a RuntimeError in Python).

With a window, the panel also follows the last submitted job by itself: while the job
is unfinished, `_auto_refresh` (another timer) runs the same refresh as the Refresh
button, `AUTO_REFRESH_SECONDS` after the previous answer, one at a time.

No `from __future__ import annotations` here: Blender reads the property annotations
of these classes as objects, not strings.
"""

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from . import runner

ADDON = __package__
"""`farmhand_addon` once installed: the key of this add-on's preferences."""
POLL_SECONDS = 0.2
AUTO_REFRESH_SECONDS = 10.0
"""Seconds from one answer about an unfinished job to the next question (UI mode only).
Read each time: a test sets it lower."""


class State:
    """The add-on's memory between clicks (this Blender session only); main thread only."""

    def __init__(self) -> None:
        self.submit: runner.Submit | None = None
        self.busy = ""  # "submitting" or "refreshing" while a CLI runs
        self.call = 0  # the CLI call whose events count (a submit supersedes a refresh)
        self.phase = ""
        self.percent: float | None = None
        self.error = ""
        self.message = ""
        self.outage = ""  # while a submit's manager does not answer: why, and Cancel
        self.job_id = 0
        self.job_page = ""
        self.job_status = ""  # the line the panel shows
        self.job_state = ""  # the manager's word: queued, active, ..., completed


STATE = State()
CANCELED = "submit canceled"
INBOX: "queue.Queue[dict[str, Any]]" = queue.Queue()
"""Events from worker threads, applied by `_drain` on the main thread."""


def preferences() -> Any:
    return bpy.context.preferences.addons[ADDON].preferences


class FarmhandPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    manager_url: StringProperty(
        name="Manager URL",
        description="e.g. http://render-manager:8080 (empty: the farmhand CLI's own "
        "FARMHAND_URL or config file)",
        default="",
    )
    api_token: StringProperty(
        name="API token",
        description="Your farmhand API token (empty: the CLI's own FARMHAND_TOKEN or "
        "config file). Kept in Blender's preferences file",
        default="",
        subtype="PASSWORD",
    )
    farmhand_path: StringProperty(
        name="farmhand CLI",
        description="The farmhand executable (empty: found on PATH or beside Blender's "
        "Python; `farmhand addon install` sets it)",
        default="",
        subtype="FILE_PATH",
    )

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.prop(self, "manager_url")
        layout.prop(self, "api_token")
        layout.prop(self, "farmhand_path")
        try:
            layout.label(text="Using " + runner.find_farmhand(self.farmhand_path), icon="CHECKMARK")
        except runner.CliError as exc:
            layout.label(text=str(exc), icon="ERROR")


_CODEC_WORDS = {
    "h264": ("H.264", "Plays everywhere"),
    "h265": ("H.265 (HEVC)", "Smaller files at the same quality"),
    "vp9": ("VP9", "Open, for the web"),
}
_CONTAINER_NAMES = {
    "mp4": "MP4",
    "mkv": "Matroska (.mkv)",
    "mov": "QuickTime (.mov)",
    "webm": "WebM",
}
_CONTAINER_NUMBERS = {"mp4": 0, "mkv": 1, "mov": 2, "webm": 3}
_CONTAINER_ITEMS = {
    codec: [
        (name, _CONTAINER_NAMES[name], f"A .{name} file", _CONTAINER_NUMBERS[name])
        for name in names
    ]
    for codec, names in runner.VIDEO_CONTAINERS.items()
}
"""Built once: Blender keeps only pointers into the lists a dynamic enum returns."""


def _containers(settings: Any, _context: Any) -> list[Any]:
    """The containers the chosen codec goes in (a container keeps its number across
    codecs, so mkv stays chosen from h264 to vp9; one the new codec lacks reads as ''
    and the farm's default, mp4, is sent)."""
    return _CONTAINER_ITEMS.get(settings.video_codec, _CONTAINER_ITEMS["h264"])


class FarmhandJobSettings(bpy.types.PropertyGroup):
    """Saved in the .blend: a shot keeps its farm settings from one submit to the next."""

    job_name: StringProperty(
        name="Job name", description="Empty: the file's name", default="", maxlen=200
    )
    use_scene_frames: BoolProperty(
        name="Scene's frames",
        description="Render the scene's frame range (and step); off: the range below",
        default=True,
    )
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=250)
    chunk_size: IntProperty(
        name="Chunk size", description="Frames per task", default=10, min=1, max=10000
    )
    priority: IntProperty(
        name="Priority", description="0-100, higher first", default=50, min=0, max=100
    )
    make_video: BoolProperty(
        name="Make a video",
        description="Also make a video of the frames once all are rendered (needs a "
        "worker with ffmpeg)",
        default=False,
    )
    video_codec: EnumProperty(
        name="Codec",
        description="The video's codec",
        items=[(codec, *_CODEC_WORDS[codec]) for codec in runner.VIDEO_CONTAINERS],
        default="h264",
    )
    video_container: EnumProperty(
        name="Container",
        description="The video's file type: those that hold the codec",
        items=_containers,
    )
    max_workers: IntProperty(
        name="Max workers",
        description="At most this many workers on the job at once; 0: no limit",
        default=0,
        min=0,
        max=100000,
    )
    use_tiles: BoolProperty(
        name="Frames in tiles",
        description="Split each frame into tiles that several workers render at once, "
        "merged into one frame: OpenEXR if the scene writes OpenEXR, 8-bit PNG otherwise",
        default=False,
    )
    tile_columns: IntProperty(name="Columns", default=4, min=1, max=16)
    tile_rows: IntProperty(name="Rows", default=4, min=1, max=16)
    tile_current_frame: BoolProperty(
        name="Frame on screen only",
        description="A still: only the frame on screen, in tiles; off: the frame range, "
        "each frame in tiles and merged before the next (and a video of the merged frames "
        "if asked)",
        default=True,
    )
    device: EnumProperty(
        name="Device",
        description="Only workers that render with this Cycles device",
        items=[
            ("ANY", "Any worker", "Workers render with whatever device they were started with"),
            ("CPU", "CPU", "Only workers rendering on the CPU"),
            ("CUDA", "CUDA", "Only workers rendering with CUDA (NVIDIA)"),
            ("OPTIX", "OptiX", "Only workers rendering with OptiX (NVIDIA RTX)"),
            ("HIP", "HIP", "Only workers rendering with HIP (AMD)"),
            ("ONEAPI", "oneAPI", "Only workers rendering with oneAPI (Intel)"),
            ("METAL", "Metal", "Only workers rendering with Metal (Apple)"),
        ],
        default="ANY",
    )
    required_tags: StringProperty(
        name="Worker tags",
        description="Only workers with all of these tags, separated by commas or spaces "
        "(e.g. gpu, studio-b)",
        default="",
        maxlen=1000,
    )


def _ended() -> None:
    """The call under way has its outcome: no longer busy, no submit to cancel, no
    outage to show."""
    STATE.busy, STATE.submit, STATE.outage = "", None, ""


def _apply(event: dict[str, Any]) -> None:
    """One CLI event into `STATE` (main thread)."""
    kind = event.get("event")
    if kind == "packing":
        STATE.phase, STATE.percent = "packing", None
    elif kind in ("packed", "hashing"):
        STATE.phase, STATE.percent = "hashing", runner.percent(event)
    elif kind == "upload":
        STATE.phase, STATE.percent = "uploading", runner.percent(event)
    elif kind == "retrying":
        STATE.outage = runner.outage_line(event)
    elif kind == "reconnected":
        STATE.outage = ""
    elif kind == "submitted":
        _ended()
        STATE.job_id = int(event["job_id"])
        STATE.job_page = str(event.get("page", ""))
        STATE.job_status = STATE.job_state = str(event.get("status", ""))
        STATE.message = f"job {STATE.job_id} {STATE.job_status}"
        _arm_auto_refresh()
    elif kind == "status":
        STATE.busy, STATE.error = "", ""
        STATE.job_status = runner.status_line(event["job"])
        STATE.job_state = str(event["job"].get("status", ""))
        _arm_auto_refresh()
    elif kind == "error":
        refreshing = STATE.busy == "refreshing"
        _ended()
        STATE.error = str(event.get("message") or "farmhand failed")
        if refreshing:  # the manager may be back at the next try; a failed submit stops
            _arm_auto_refresh()
    elif kind == "canceled":
        _ended()
        STATE.message = CANCELED


def _drain() -> float | None:
    """The timer: apply what the threads posted, redraw, stop once nothing runs."""
    while True:
        try:
            event = INBOX.get_nowait()
        except queue.Empty:
            break
        if event.get("call") == STATE.call:  # else from a refresh a submit superseded
            _apply(event)
    _redraw()
    return POLL_SECONDS if STATE.busy else None


def _redraw() -> None:
    manager = bpy.context.window_manager
    for window in getattr(manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def _run(work: Callable[[], None]) -> None:
    """`work` (which posts to INBOX) in a thread; background mode waits for it and drains
    at once (no event loop runs timers there), so scripts take the same path as people."""
    thread = threading.Thread(target=work, name="farmhand", daemon=True)
    thread.start()
    if bpy.app.background:
        thread.join()
        _drain()
        return
    if not bpy.app.timers.is_registered(_drain):
        bpy.app.timers.register(_drain, first_interval=POLL_SECONDS, persistent=True)


def _find_cli() -> "tuple[str, dict[str, str]]":
    """The farmhand CLI and its environment, from the preferences (CliError: none)."""
    prefs = preferences()
    farmhand = runner.find_farmhand(prefs.farmhand_path)
    return farmhand, runner.cli_env(prefs.manager_url, prefs.api_token)


def _cli(operator: Any) -> "tuple[str, dict[str, str]] | None":
    """`_find_cli()`, or None, reported on the operator, when there is no CLI to run."""
    try:
        return _find_cli()
    except runner.CliError as exc:
        operator.report({"ERROR"}, str(exc))
        return None


def _begin(busy: str, keep_error: bool = False) -> int:
    """A CLI call starts; only its events count from now on. Its number."""
    STATE.call += 1
    STATE.busy = busy
    if not keep_error:
        STATE.error, STATE.message = "", ""
    STATE.phase, STATE.percent, STATE.outage = "", None, ""
    return STATE.call


def _refresh(farmhand: str, env: "dict[str, str]", auto: bool = False) -> None:
    """`farmhand job ID --json` in a thread, its answer applied by `_drain`. An
    auto-refresh leaves the last error shown until an answer replaces it."""
    job_id = STATE.job_id
    call = _begin("refreshing", keep_error=auto)

    def work() -> None:
        try:
            event = {"event": "status", "job": runner.job_status(farmhand, env, job_id)}
        except runner.CliError as exc:
            event = {"event": "error", "message": str(exc)}
        INBOX.put({**event, "call": call})

    _run(work)


def _auto_refresh() -> "float | None":
    """The auto-refresh timer: one refresh, re-armed by its answer (`_apply`)."""
    step = runner.auto_refresh_step(STATE.job_id, STATE.job_state, STATE.busy)
    if step == "stop":
        return None
    if step == "wait":
        return AUTO_REFRESH_SECONDS
    try:
        farmhand, env = _find_cli()
    except runner.CliError as exc:  # shown; the preferences may be fixed by the next try
        STATE.error = str(exc)
        _redraw()
        return AUTO_REFRESH_SECONDS
    _refresh(farmhand, env, auto=True)
    return None


def _arm_auto_refresh() -> None:
    """After an answer about the job: the next auto-refresh AUTO_REFRESH_SECONDS from
    now while the job is unfinished, none once it is (or in background mode)."""
    _stop_auto_refresh()
    step = runner.auto_refresh_step(STATE.job_id, STATE.job_state, "")
    if step != "stop" and not bpy.app.background:
        bpy.app.timers.register(_auto_refresh, first_interval=AUTO_REFRESH_SECONDS, persistent=True)


def _stop_auto_refresh() -> None:
    if bpy.app.timers.is_registered(_auto_refresh):
        bpy.app.timers.unregister(_auto_refresh)


class FARMHAND_OT_submit(bpy.types.Operator):
    """Save this .blend if needed and send it, with every file it uses, to the farm"""

    bl_idname = "farmhand.submit"
    bl_label = "Submit to farmhand"

    def execute(self, context: Any) -> Any:
        if STATE.busy == "submitting":  # a refresh still running is superseded below
            self.report({"ERROR"}, f"farmhand is busy {STATE.busy}")
            return {"CANCELLED"}
        if not bpy.data.filepath:
            self.report(
                {"ERROR"}, "save the .blend first (File > Save As): the farm renders the saved file"
            )
            return {"CANCELLED"}
        cli = _cli(self)
        if cli is None:
            return {"CANCELLED"}
        farmhand, env = cli
        note = ""
        # In background mode changes made by a script do not mark the file dirty
        # (Blender 3.4), so a script's submit always saves what it sees.
        if bpy.data.is_dirty or bpy.app.background:
            try:
                bpy.ops.wm.save_mainfile()
            except RuntimeError as exc:
                self.report({"ERROR"}, f"could not save the .blend: {runner.one_line(str(exc))}")
                return {"CANCELLED"}
            note = f" ({os.path.basename(bpy.data.filepath)} was saved first)"
        image_format = context.scene.render.image_settings.file_format
        warning = " ".join(runner.format_note(image_format))
        args = runner.submit_args(
            farmhand, bpy.data.filepath, *_frames(context.scene), **_options(context.scene.farmhand)
        )
        try:
            submit = runner.Submit(args, env)
        except runner.CliError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

        def pump() -> None:
            try:
                for event in submit.events():
                    INBOX.put({**event, "call": call})
            except Exception as exc:  # a panel stuck on "uploading" would hide it
                message = f"{type(exc).__name__}: {exc}"
                INBOX.put({"event": "error", "message": message, "call": call})

        _stop_auto_refresh()  # the panel follows the new job once it exists
        call = _begin("submitting")
        STATE.submit = submit
        _run(pump)
        if STATE.error:
            self.report({"ERROR"}, STATE.error + note)
            return {"CANCELLED"}
        said = "submitting to farmhand" if STATE.busy else f"{STATE.message} {STATE.job_page}"
        if warning:  # the frames will not be what the scene saves: said where it is seen
            self.report({"WARNING"}, f"{said}{note} · {warning}")
        else:
            self.report({"INFO"}, said + note)
        return {"FINISHED"}


def _frames(scene: Any) -> tuple[int, int, int]:
    settings = scene.farmhand
    if settings.use_tiles and settings.tile_current_frame:  # a still: the frame on screen
        return scene.frame_current, scene.frame_current, 1
    if settings.use_scene_frames:
        return scene.frame_start, scene.frame_end, scene.frame_step
    return settings.frame_start, settings.frame_end, 1


def _options(settings: Any) -> dict[str, Any]:
    return {
        "chunk": settings.chunk_size,
        "priority": settings.priority,
        "name": settings.job_name.strip(),
        "video": settings.make_video and not (settings.use_tiles and settings.tile_current_frame),
        "codec": settings.video_codec,
        "container": settings.video_container,
        "max_workers": settings.max_workers,
        "device": "" if settings.device == "ANY" else settings.device,
        "tiles": f"{settings.tile_columns}x{settings.tile_rows}" if settings.use_tiles else "",
        "tags": runner.tag_list(settings.required_tags),
    }


class FARMHAND_OT_cancel(bpy.types.Operator):
    """Stop the running submit (a job is made only once every file is uploaded)"""

    bl_idname = "farmhand.cancel"
    bl_label = "Cancel submit"

    def execute(self, context: Any) -> Any:
        if STATE.submit is not None:
            STATE.submit.cancel()
        return {"FINISHED"}


class FARMHAND_OT_refresh(bpy.types.Operator):
    """Ask the manager how the last submitted job is doing"""

    bl_idname = "farmhand.refresh"
    bl_label = "Refresh"

    def execute(self, context: Any) -> Any:
        if not STATE.job_id or STATE.busy:
            return {"CANCELLED"}
        cli = _cli(self)
        if cli is None:
            return {"CANCELLED"}
        _refresh(*cli)
        if STATE.error:
            self.report({"ERROR"}, STATE.error)
            return {"CANCELLED"}
        return {"FINISHED"}


class FARMHAND_OT_open_job(bpy.types.Operator):
    """Open the job's page in the farm's web UI"""

    bl_idname = "farmhand.open_job"
    bl_label = "Open in browser"

    def execute(self, context: Any) -> Any:
        if not STATE.job_page:
            return {"CANCELLED"}
        bpy.ops.wm.url_open(url=STATE.job_page)
        return {"FINISHED"}


def _value_label(layout: Any, name: str, value: str) -> None:
    """A read-only value lined up with the properties around it (which Blender splits
    into a right-aligned name and its value); a plain label would start at the left."""
    split = layout.split(factor=0.4)
    heading = split.row()
    heading.alignment = "RIGHT"
    heading.label(text=name)
    split.label(text=value)


class FARMHAND_PT_render(bpy.types.Panel):
    bl_label = "farmhand"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.farmhand
        column = layout.column()
        column.prop(settings, "job_name")
        if not settings.job_name.strip() and bpy.data.filepath:
            _value_label(
                column, "", os.path.splitext(os.path.basename(bpy.data.filepath))[0] + " (default)"
            )
        column.prop(settings, "use_tiles")
        if settings.use_tiles:  # a task per tile: no chunks
            row = column.row(align=True)
            row.prop(settings, "tile_columns")
            row.prop(settings, "tile_rows")
            column.prop(settings, "tile_current_frame")
            if settings.tile_current_frame:  # one still: no range or video
                _value_label(column, "Frame", str(context.scene.frame_current))
            else:
                self.draw_frames(column, context.scene, settings, chunks=False)
        else:
            self.draw_frames(column, context.scene, settings)
        for number, line in enumerate(
            runner.format_note(context.scene.render.image_settings.file_format)
        ):
            column.label(text=line, icon="INFO" if number == 0 else "BLANK1")
        column.prop(settings, "priority")
        column.prop(settings, "max_workers")
        column.prop(settings, "device")
        column.prop(settings, "required_tags")
        self.draw_state(layout)

    def draw_frames(self, column: Any, scene: Any, settings: Any, chunks: bool = True) -> None:
        column.prop(settings, "use_scene_frames")
        if settings.use_scene_frames:
            step = f" step {scene.frame_step}" if scene.frame_step > 1 else ""
            _value_label(column, "Frames", f"{scene.frame_start}-{scene.frame_end}{step}")
        else:
            column.prop(settings, "frame_start")
            column.prop(settings, "frame_end")
        if chunks:
            column.prop(settings, "chunk_size")
        column.prop(settings, "make_video")
        if settings.make_video:
            column.prop(settings, "video_codec")
            column.prop(settings, "video_container")

    def draw_state(self, layout: Any) -> None:
        if STATE.busy == "submitting":
            row = layout.row()
            text = STATE.phase or "starting"
            if STATE.percent is not None:
                text += f" {STATE.percent:.0f}%"
            if hasattr(row, "progress"):  # Blender 4.0+
                row.progress(factor=(STATE.percent or 0) / 100, text=text)
            else:
                row.label(text=text, icon="EXPORT")
            row.operator(FARMHAND_OT_cancel.bl_idname, text="", icon="CANCEL")
            if STATE.outage:  # said at once: the progress above is not moving
                box = layout.box()
                box.alert = True
                box.label(text=STATE.outage, icon="ERROR")
        else:
            layout.operator(
                FARMHAND_OT_submit.bl_idname, text="Submit to farm", icon="RENDER_ANIMATION"
            )
        if STATE.error:
            box = layout.box()
            box.alert = True
            box.label(text=STATE.error, icon="ERROR")
        elif STATE.message and not STATE.message.startswith(f"job {STATE.job_id} "):
            # Not the line about the job below (which its box shows): e.g. a later
            # submit canceled, which must not read as if the earlier job were it.
            layout.label(text=STATE.message, icon="INFO")
        if STATE.job_id:
            box = layout.box()
            earlier = " (earlier)" if STATE.message == CANCELED else ""
            box.label(text=f"Job {STATE.job_id}{earlier}: {STATE.job_status}", icon="RENDER_RESULT")
            row = box.row()
            refresh = row.row()
            refresh.enabled = not STATE.busy  # the browser link stays usable meanwhile
            refresh.operator(FARMHAND_OT_refresh.bl_idname, icon="FILE_REFRESH")
            row.operator(FARMHAND_OT_open_job.bl_idname, icon="URL")


CLASSES = (
    FarmhandPreferences,
    FarmhandJobSettings,
    FARMHAND_OT_submit,
    FARMHAND_OT_cancel,
    FARMHAND_OT_refresh,
    FARMHAND_OT_open_job,
    FARMHAND_PT_render,
)


def register_classes() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.farmhand = PointerProperty(type=FarmhandJobSettings)


def unregister_classes() -> None:
    if STATE.submit is not None:
        STATE.submit.cancel()
    if bpy.app.timers.is_registered(_drain):
        bpy.app.timers.unregister(_drain)
    _stop_auto_refresh()
    STATE.call += 1  # an answer still on its way is not applied
    STATE.busy = ""
    del bpy.types.Scene.farmhand
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
