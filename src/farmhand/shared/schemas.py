"""The wire format shared by the manager, the worker, the CLI and the add-on.

Every request and response body of the REST API is one of these Pydantic models, so the
OpenAPI schema, the server and the one HTTP client cannot drift apart. Inside the
manager and the worker plain dataclasses are used; these models live only at the edges.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from farmhand.shared.blendfile import check_spec
from farmhand.shared.frames import MAX_FRAME, MAX_FRAMES_PER_JOB
from farmhand.shared.outputnames import MAX_TEMPLATE, check_template

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A lower-case hex SHA-256: how blobs are named everywhere."""

RelativePath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$")]
"""A worker tag such as `gpu`, `highmem` or `studio-b`: lower case, no spaces."""
"""A path inside a job's file tree; checked further by `farmhand.shared.paths`."""

JsonInt = Annotated[int, Strict()]
"""An integer setting: a JSON integer only. Lax parsing would take `true` as 1 and `"3"`
as 3, so a client's bug (a checkbox's value, a form field sent as text) would render
frames nobody asked for instead of being refused with the field named."""
JsonNumber = Annotated[float, Strict()]
"""A number setting: a JSON integer or decimal, never `true` or `"3"` (as `JsonInt`)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control_characters(text: str) -> str:
    found = _CONTROL.search(text)
    if found is not None:
        raise ValueError(
            f"must be one line of printable text: control character "
            f"U+{ord(found.group()):04X} at position {found.start()}"
        )
    return text


FreeText = Annotated[str, AfterValidator(_no_control_characters)]
"""Text a person names something with and others read (a job's name): one line, no
control characters (U+0000-U+001F, tab and newline included, U+007F-U+009F). NUL cannot
be stored in PostgreSQL text at all; the others break the one-line listings of the web
UI and `farmhand jobs`, or drive the terminal that prints them (ESC, the 8-bit CSI).
Length limits stay with each field."""


class _Strict(BaseModel):
    """Unknown keys are an error: a typo in a setting must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class JobStatus(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class WorkerStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    DISABLED = "disabled"
    DRAINING = "draining"
    ASLEEP = "asleep"


OutputFormat = Literal["PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER"]
DeviceKind = Literal["CPU", "CUDA", "OPTIX", "HIP", "ONEAPI", "METAL"]
"""A Cycles compute device kind, as `farmhand worker --device` takes it."""


# ---------------------------------------------------------------------------- jobs

JobActionName = Literal["pause", "resume", "requeue-failed", "requeue-all"]
TaskActionName = Literal["requeue", "cancel"]
RunnerActionName = Literal["enable", "disable", "drain"]
When = Literal["now", "after-task"]
"""When a runner change applies: now (its running task is aborted and requeued) or once
its running task is done."""
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Monday first, as `datetime.weekday()` counts."""
VideoCodec = Literal["h264", "h265", "vp9"]
VideoContainer = Literal["mp4", "mkv", "mov", "webm"]
VIDEO_CONTAINERS: dict[str, frozenset[str]] = {
    "h264": frozenset({"mp4", "mkv", "mov"}),
    "h265": frozenset({"mp4", "mkv", "mov"}),
    "vp9": frozenset({"webm", "mkv", "mp4"}),
}
"""Which containers hold which codec (what ffmpeg can mux and players commonly read)."""
MAX_CRF = {"h264": 51, "h265": 51, "vp9": 63}


DEFAULT_VIDEO_FPS = 24.0
"""A video's frame rate when neither the job nor its scene says (Blender's default)."""


class VideoSettings(_Strict):
    """A video made of the job's frames by ffmpeg once every frame is rendered."""

    codec: VideoCodec = "h264"
    container: VideoContainer = "mp4"
    fps: JsonNumber | None = Field(
        default=None,
        gt=0,
        le=240,
        description="Frames per second. None: the scene's, as Blender reported it when a "
        f"worker opened the file ({DEFAULT_VIDEO_FPS:g} if none has yet).",
    )
    crf: JsonInt | None = Field(
        default=None, ge=0, le=63, description="Quality (lower is better); None: codec default."
    )

    def at_scene_fps(self, scene_fps: float | None) -> VideoSettings:
        """These settings with the frame rate to use: the job's own if it set one, else
        its scene's, else the default. What a `video` task is sent."""
        return self.model_copy(update={"fps": self.fps or scene_fps or DEFAULT_VIDEO_FPS})

    @model_validator(mode="after")
    def _check_combination(self) -> VideoSettings:
        if self.container not in VIDEO_CONTAINERS[self.codec]:
            allowed = ", ".join(sorted(VIDEO_CONTAINERS[self.codec]))
            raise ValueError(f"a {self.codec} video goes in {allowed}, not {self.container}")
        if self.crf is not None and self.crf > MAX_CRF[self.codec]:
            raise ValueError(f"crf for {self.codec} is 0 to {MAX_CRF[self.codec]}, not {self.crf}")
        return self

    @property
    def filename(self) -> str:
        return f"video.{self.container}"


MAX_TILES_PER_SIDE = 16

MAX_TASKS_PER_JOB = MAX_FRAMES_PER_JOB
"""The most tasks a tiled job may compile to (its tiles and a merge per frame): as many
as the render tasks of the longest animation allowed, one frame a chunk, so a tiled job
weighs no more on the database and the claim queries than any other job."""

TILE_SUFFIXES: frozenset[str] = frozenset({".png", ".exr"})
"""Every format a tile can be: 8-bit PNG, or OpenEXR (cut and merged without loss)."""

_TILE_EXTENSIONS: dict[str | None, frozenset[str]] = {
    None: TILE_SUFFIXES,
    "PNG": frozenset({".png"}),
    "OPEN_EXR": frozenset({".exr"}),
    "OPEN_EXR_MULTILAYER": frozenset({".exr"}),
}


def tile_extensions(output_format: str | None) -> frozenset[str]:
    """The files a tile of a still in `output_format` may be, and so its merged frame;
    empty for a format tiles are not made in (JPEG).

    A job in PNG gets 8-bit PNG tiles; a job in OpenEXR gets EXR tiles, which keep the
    scene's half or float depth, codec and passes. A job keeping the .blend's format
    (None) gets what its scene writes when that is OpenEXR, and 8-bit PNG tiles for any
    other scene format (the driver's `render_frames` decides, in Blender): the manager
    cannot see the scene, so it allows both, but every tile of one still in the same
    one, as the first tile recorded (`runner_tiles._record_tile`). The manager stores a
    tile under its extension (`runner_tiles.tile_path`), and the `merge` task writes the
    frame in the tiles' (`worker/merge.py`, `merged_suffix`)."""
    return _TILE_EXTENSIONS.get(output_format, frozenset())


class TileGrid(_Strict):
    """How a tiled still is split: `columns` x `rows` render tasks, merged into one frame."""

    columns: JsonInt = Field(ge=1, le=MAX_TILES_PER_SIDE)
    rows: JsonInt = Field(ge=1, le=MAX_TILES_PER_SIDE)
    overlap: JsonInt = Field(
        default=32,
        ge=0,
        le=512,
        description="Pixels each tile renders beyond its edges, cut off before the merge: "
        "the denoiser and the compositor see across the seams.",
    )

    @model_validator(mode="after")
    def _check_several(self) -> TileGrid:
        if self.columns * self.rows < 2:
            raise ValueError("a tiled still needs at least 2 tiles (e.g. 2x1)")
        return self


class TileSpec(BaseModel):
    """Which tile a render task renders: column and row count from the top left."""

    frame: int
    column: int
    row: int
    columns: int
    rows: int
    overlap: int = 0
    """Pixels rendered beyond each edge of the tile (within the frame), then cut off."""

    @property
    def place(self) -> dict[str, int]:
        """Where the tile sits in its still: what a merge needs (`TileFile`)."""
        return {"column": self.column, "row": self.row, "columns": self.columns, "rows": self.rows}

    @property
    def label(self) -> str:
        """`tile 3 of 4`: counted left to right, top to bottom, as the tasks are."""
        return f"tile {self.row * self.columns + self.column + 1} of {self.columns * self.rows}"


class JobSettings(_Strict):
    """What a person chooses when submitting an animation or a still."""

    name: FreeText = Field(default="", max_length=200)
    frame_start: JsonInt = Field(default=1, ge=-MAX_FRAME, le=MAX_FRAME)
    frame_end: JsonInt = Field(default=1, ge=-MAX_FRAME, le=MAX_FRAME)
    frame_step: JsonInt = Field(default=1, ge=1, le=MAX_FRAME)
    chunk_size: JsonInt = Field(default=1, ge=1, le=10_000)
    priority: JsonInt = Field(default=50, ge=0, le=100)
    output_format: OutputFormat | None = Field(
        default=None, description="None keeps the format saved in the .blend."
    )
    resolution_percentage: JsonInt | None = Field(default=None, ge=1, le=1000)
    samples: JsonInt | None = Field(default=None, ge=1, le=1_000_000)
    max_attempts: JsonInt | None = Field(default=None, ge=1, le=100)
    required_tags: list[Tag] = Field(
        default_factory=list, max_length=32, description="Only workers with all of these tags."
    )
    max_workers: JsonInt | None = Field(
        default=None, ge=1, le=100_000, description="At most this many workers at once."
    )
    blender_version: str | None = Field(
        default=None,
        max_length=100,
        description="Blender versions allowed to render, e.g. '>=4.2,<5' or '5.0'. Workers "
        "also need a Blender at least as new as the one that saved the file.",
    )
    device: DeviceKind | None = Field(
        default=None, description="Only workers rendering with this Cycles device kind."
    )
    video: VideoSettings | None = Field(
        default=None,
        description="Make a video of the frames with ffmpeg (true: h264 in mp4 at the "
        "scene's frame rate).",
    )

    tiles: TileGrid | None = Field(
        default=None,
        description="Split each frame of the range into columns x rows tiles rendered by "
        "different workers, then merged into that frame by its own `merge` task: 8-bit PNG, "
        "OPEN_EXR or OPEN_EXR_MULTILAYER (with no output_format, OpenEXR if the scene "
        "writes it, else PNG).",
    )

    output_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE,
        description="How output files are named in downloads and on shared storage, e.g. "
        "'{job}/{frame:04d}.{ext}'; fields {job}, {job_id}, {frame}, {task}, {ext}. "
        "None: 'frames/0001.png' in downloads, '{frame:04d}.{ext}' on shared storage.",
    )
    storage: Literal["upload", "shared"] = Field(
        default="upload",
        description="'shared': the .blend and its assets are read from shared storage "
        "(a NAS) instead of being uploaded; see docs/STORAGE.md.",
    )
    output_dir: str | None = Field(
        default=None,
        max_length=1024,
        description="Shared storage only: the folder where workers also write the frames, "
        "as the submitter sees it or as '{variable}/…'.",
    )

    @field_validator("name", mode="before")
    @classmethod
    def _clean_stored_name(cls, value: object, info: ValidationInfo) -> object:
        """A job stored before names were checked is read back (`model_validate` of its
        stored settings: Python mode) with its control characters made spaces, so it
        still opens and is claimed; a name sent to the API (JSON) is refused instead."""
        if info.mode == "python" and isinstance(value, str):
            return _CONTROL.sub(" ", value)
        return value

    @field_validator("output_template")
    @classmethod
    def _check_output_template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("video", mode="before")
    @classmethod
    def _video_shorthand(cls, value: object) -> object:
        """`video: true` asks for the defaults, `false` for no video."""
        if value is True:
            return VideoSettings()
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _check_range(self) -> JobSettings:
        if self.blender_version is not None:
            check_spec(self.blender_version)
        if self.frame_end < self.frame_start:
            raise ValueError(
                f"frame_end ({self.frame_end}) is before frame_start ({self.frame_start})"
            )
        count = (self.frame_end - self.frame_start) // self.frame_step + 1
        if count > MAX_FRAMES_PER_JOB:
            raise ValueError(f"{count} frames is more than the {MAX_FRAMES_PER_JOB} a job may have")
        if self.tiles is not None:
            self._check_tiles()
        return self

    def _check_tiles(self) -> None:
        """What a tiled job cannot be (yet): more tasks than `MAX_TASKS_PER_JOB`, or a
        format without `tile_extensions` (JPEG: a lossy tile cut and saved again loses more
        each time).

        A range is fine: every frame gets its own tiles and merge (`compile_tiles`), its
        tiles are stored in their own folder (`tiles/0007/`) and its merge gets only those.
        So is a video: its task waits for every tile and merge, and is made of the merged
        frames, which are the job's frames like any other.

        Shared storage is no obstacle: tile tasks read the .blend from the share as render
        tasks do, the tiles always go up to the manager (the merge fetches them from
        there), and only the merged frame, never a tile, is written into `output_dir`
        (`worker/agent.py`, `_do_merge`)."""
        assert self.tiles is not None
        frames = (self.frame_end - self.frame_start) // self.frame_step + 1
        tiles = self.tiles.columns * self.tiles.rows
        tasks = frames * (tiles + 1)
        if tasks > MAX_TASKS_PER_JOB:
            raise ValueError(
                f"{frames} frames in {tiles} tiles is {tasks} tasks (a tile task each and a "
                f"merge per frame), more than the {MAX_TASKS_PER_JOB} a job may have: fewer "
                f"frames, a larger step or fewer tiles"
            )
        if not tile_extensions(self.output_format):
            raise ValueError(
                f"a tiled still is merged as PNG, OPEN_EXR or OPEN_EXR_MULTILAYER, not "
                f"{self.output_format} (tiles are cut and merged losslessly; render PNG "
                f"and convert the frame)"
            )


MAX_MISSING_LISTED = 100
"""How many of the files a job was submitted without it keeps by name; the rest it counts."""
MAX_MISSING_PATH = 1024
MissingPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_MISSING_PATH),
    AfterValidator(_no_control_characters),
]
"""A file a job was submitted without, as the artist's scene names it: shown to whoever
looks at the job, so one line of printable text like a job's name (`FreeText`)."""


def missing_fields(paths: Sequence[str]) -> tuple[list[str], int]:
    """`JobCreate.missing_files` and `missing_count` for a job submitted without `paths`:
    the first `MAX_MISSING_LISTED`, each made valid as a `MissingPath` (a file name may
    hold any character but `/` and NUL: control characters become `?`, an overlong path
    keeps its end), and how many there are in all."""
    listed = []
    for path in paths[:MAX_MISSING_LISTED]:
        text = _CONTROL.sub("?", path) or "?"
        if len(text) > MAX_MISSING_PATH:
            text = "…" + text[-(MAX_MISSING_PATH - 1) :]
        listed.append(text)
    return listed, len(paths)


class JobCreate(JobSettings):
    """Create a job from blobs already uploaded (`PUT /api/blobs/{sha256}`)."""

    main_file: RelativePath = Field(description="The .blend to render, a key of `files`.")
    files: dict[RelativePath, Sha256] = Field(
        min_length=1, max_length=100_000, description="Relative path in the job tree → SHA-256."
    )
    missing_files: list[MissingPath] = Field(
        default_factory=list,
        max_length=MAX_MISSING_LISTED,
        description="Files the scene uses that did not exist when it was submitted anyway "
        "(`farmhand submit --allow-missing`): relative to the project folder, or the path "
        "the scene gives one outside it. The job shows them, so that frames rendered "
        f"without them are not taken for a complete render. At most {MAX_MISSING_LISTED}.",
    )
    missing_count: JsonInt | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="How many files were missing in all, when more than `missing_files` "
        "lists (default: its length).",
    )

    @model_validator(mode="after")
    def _count_the_missing(self) -> JobCreate:
        listed = len(self.missing_files)
        if self.missing_count is None:
            self.missing_count = listed
        elif self.missing_count < listed:
            raise ValueError(
                f"missing_count ({self.missing_count}) is less than the {listed} "
                "missing_files listed"
            )
        return self


class SharedJobCreate(JobSettings):
    """Create a job whose files stay on shared storage (`storage: "shared"`)."""

    storage: Literal["upload", "shared"] = "shared"
    blend_path: str = Field(
        min_length=1,
        max_length=1024,
        description="The .blend on the share, as the submitter sees it "
        "(/mnt/projects/…, P:\\…) or as '{variable}/…'.",
    )


class TaskSummary(BaseModel):
    id: int
    index: int
    type: str
    status: TaskStatus
    frames: list[int]
    tile: TileSpec | None = Field(default=None, description="Which tile of a tiled still.")
    frames_done: int
    attempts: int = Field(
        description="How many times it was handed to a worker, give-backs included (a worker "
        "stopping, or one whose machine cannot work, gives its task back without a failure). "
        "Not what the retry limit counts: that is `failures`."
    )
    failures: int | None = Field(
        default=None,
        description="How many of those hand-outs failed: what `max_attempts` limits (the task "
        "fails for good at `max_attempts` failures). A person's requeue sets it back to 0. "
        "Always given by this manager; null only from one older than the field.",
    )
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None = Field(
        description="Why the task is not done (or, while it runs again, why its earlier "
        "attempt did not finish): its last failure, or why it went back to the queue or was "
        "canceled. Null for a completed task: an earlier attempt's error is not its error."
    )
    progress: float = Field(default=0.0, description="0 to 100, with the frame in progress.")
    frame: int | None = Field(default=None, description="The frame rendering now.")
    sample: int | None = Field(default=None, description="Its sample (Cycles) ...")
    samples_total: int | None = Field(default=None, description="... of this many.")
    render_seconds: float = Field(default=0.0, description="Blender time on finished frames.")
    peak_memory_bytes: int | None = Field(
        default=None, description="Most memory Blender used on one of its frames."
    )
    eta_seconds: float | None = Field(
        default=None, description="Time left, from the seconds its finished frames took."
    )


class JobSummary(BaseModel):
    id: int
    name: str
    owner: str
    status: JobStatus
    priority: int
    progress: float = Field(description="0 to 100, from frames finished.")
    frames_done: int
    frames_total: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_reason: str | None = None
    workers: list[str] = Field(
        default_factory=list,
        description="Names of the workers holding the job's active tasks, sorted; empty "
        "if none. In the list, so a page of jobs needs no request per job to show them.",
    )
    eta_seconds: float | None = Field(
        default=None,
        description="Time left: the mean Blender seconds of finished frames times the "
        "frames left, shared among the workers on it (elapsed time before any frame). "
        "The same number in the list as in the job's detail.",
    )


class JobActionOutcome(JobSummary):
    """`POST /api/jobs/{id}/actions`' answer: the job after the action, and for a requeue
    how many tasks it put back, so that a client need not count them before asking (a
    count that a task finishing meanwhile would make wrong)."""

    requeued: int | None = Field(
        default=None,
        description="Tasks a requeue put back in the queue; 0 when the job had none of "
        "the tasks asked for (its blocklist was still cleared). null for pause and resume.",
    )


JOB_PAGE_MAX = 1000
"""Most jobs `GET /api/jobs` answers at once, and its default page."""
TASK_PAGE_MAX = 1000
"""Most tasks `GET /api/jobs/{id}/tasks` answers at once."""
TASK_PAGE_DEFAULT = 200


class JobDetailQuery(_Strict):
    """`GET /api/jobs/{id}`'s query string. Unknown parameters are refused (400): a typo
    such as `?task=false` answered every task of the job, megabytes of a big one."""

    tasks: bool = Field(
        default=True, description="false: leave the task list out (`GET …/tasks` pages it)."
    )


class JobListQuery(_Strict):
    """`GET /api/jobs`'s query string. Unknown parameters are refused (400), so a
    misspelt filter (`?state=failed`) cannot pass for one that was applied."""

    status: list[JobStatus] = Field(
        default_factory=list, description="Only jobs in these states (repeatable)."
    )
    owner: str | None = Field(
        default=None, max_length=200, description="Only jobs of the user with this name."
    )
    limit: int = Field(default=JOB_PAGE_MAX, ge=1, le=JOB_PAGE_MAX)
    offset: int = Field(default=0, ge=0)


class TaskListQuery(_Strict):
    """`GET /api/jobs/{id}/tasks`'s query string; unknown parameters are refused (400)."""

    status: list[TaskStatus] = Field(
        default_factory=list, description="Only tasks in these states (repeatable)."
    )
    limit: int = Field(default=TASK_PAGE_DEFAULT, ge=1, le=TASK_PAGE_MAX)
    offset: int = Field(default=0, ge=0)


class JobDetail(JobSummary):
    settings: JobSettings
    settings_line: str = Field(
        default="",
        description="What the job asked for beyond its frames, in words (device, tags, "
        "worker cap, tiles, format, video...), as the web page and `farmhand job` show it.",
    )
    main_file: str
    missing_files: list[str] = Field(
        default_factory=list,
        description="Files the scene used that did not exist when the job was submitted "
        "(`--allow-missing`), as `JobCreate.missing_files` named them: its frames were "
        "rendered without them (Blender shows a missing texture in magenta).",
    )
    missing_count: int = Field(
        default=0,
        description=f"How many files the job was submitted without; over "
        f"{MAX_MISSING_LISTED}, more than `missing_files` names.",
    )
    tasks: list[TaskSummary] = Field(
        description="Every task in index order; empty when asked with `?tasks=false` "
        "(`GET /api/jobs/{id}/tasks` pages them)."
    )
    task_counts: dict[TaskStatus, int] = Field(
        default_factory=dict,
        description="How many of its tasks are in each state (every state, 0 included); "
        "with `?tasks=false` too, so a job of 10,000 tasks is summed up without them.",
    )
    elapsed_seconds: float | None
    seconds_per_frame: float | None = Field(
        default=None, description="Mean Blender seconds of a finished frame."
    )
    peak_memory_bytes: int | None = Field(
        default=None, description="Most memory Blender used on a frame of this job."
    )
    blender_saved: str | None = Field(
        default=None, description="The Blender version that saved the main .blend."
    )
    blender_pinned: str | None = Field(
        default=None,
        description="The Blender series (major.minor, e.g. `5.0`) every render task of "
        "the job renders with: the one its first render task was claimed with, so tiles "
        "and frames match. Null until a render task is claimed.",
    )
    last_frame: JobFile | None = Field(
        default=None, description="The frame rendered last (an output of kind `output`)."
    )
    last_preview: JobFile | None = Field(
        default=None, description="Blender's JPEG preview of `last_frame`, if it made one."
    )


class JobAction(_Strict):
    action: JobActionName


class JobPatch(_Strict):
    priority: JsonInt = Field(ge=0, le=100)


class TaskAction(_Strict):
    action: TaskActionName


class BlocklistEntry(BaseModel):
    id: int
    worker_id: int
    worker: str
    job_id: int
    task_type: str
    reason: str
    created_at: datetime


class JobAccepted(BaseModel):
    id: int
    status: JobStatus
    location: str


JobFileKind = Literal["input", "output", "preview", "pass", "tile"]


class JobFile(BaseModel):
    id: int
    kind: JobFileKind = Field(
        description="input; output (a frame, or a video); preview (Blender's JPEG of a "
        "frame, `previews/0001.jpg`); pass (a compositor File Output node's file); tile "
        "(a rendered tile of a tiled still, `tiles/0001/r0c1.png` or `.exr`, merged into "
        "its frame)."
    )
    path: str
    size: int
    sha256: Sha256
    frame: int | None = None
    task_id: int | None = None


class BlobsMissingRequest(_Strict):
    hashes: list[Sha256] = Field(max_length=100_000)


class BlobsMissingResponse(BaseModel):
    missing: list[Sha256]


class BlobStored(BaseModel):
    sha256: Sha256
    size: int


class UploadCreate(_Strict):
    """Start (or find again, to resume) a resumable upload of one blob."""

    sha256: Sha256
    size: int = Field(ge=0, description="Bytes the blob has; the upload ends at this offset.")


class UploadStatus(BaseModel):
    """Where a resumable upload stands: send the bytes from `offset` on."""

    id: str = Field(description="The upload's id (`/api/uploads/{id}`); empty once stored.")
    sha256: Sha256
    size: int
    offset: int = Field(description="Bytes received and kept so far.")
    complete: bool = Field(description="The blob is stored (verified against `sha256`).")


class ErrorResponse(BaseModel):
    detail: str


# -------------------------------------------------------------------------- runners


class WorkerCapabilities(_Strict):
    blender_versions: list[str] = Field(default_factory=list, max_length=32)
    cpu: str = Field(default="", max_length=200)
    cores: int = Field(default=0, ge=0)
    ram_bytes: int = Field(default=0, ge=0)
    task_types: list[str] = Field(default_factory=lambda: ["render"], max_length=32)
    hostname: str = Field(default="", max_length=255)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    device: DeviceKind = Field(default="CPU", description="The device this worker renders on.")
    gpu: int | None = Field(default=None, ge=0, description="Which GPU of that kind (--gpu).")
    blender_devices: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Devices Blender sees, as 'KIND: name' (e.g. 'CUDA: RTX 4090').",
    )
    gpus: list[str] = Field(default_factory=list, max_length=64, description="GPU names.")
    address: str = Field(
        default="",
        max_length=100,
        description="The worker's own IP address on its way to the manager (the local end "
        "of a route to it), as it detects it at start; empty if it could not tell.",
    )
    protocol: int = Field(
        default=0,
        ge=0,
        description="The worker/manager protocol the worker speaks (`shared/protocol.py`); "
        "0, the default, is a worker older than this field. A manager hands no task to "
        "a worker below its minimum: its claims are answered 426. A registration that sends "
        "no capabilities at all (a script; every farmhand worker sends them) counts as "
        "speaking the manager's own.",
    )


class RunnerRegister(_Strict):
    token: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)


class RunnerRegistered(BaseModel):
    worker_id: int
    name: str
    secret: str = Field(description="Shown once; the manager keeps only its hash.")


class Heartbeat(_Strict):
    capabilities: WorkerCapabilities | None = None
    current_task_id: int | None = None
    starting: bool = Field(
        default=False,
        description="The worker has just (re)started and holds no task: any task the "
        "manager still counts as its own goes back to the queue.",
    )


class HeartbeatReply(BaseModel):
    status: WorkerStatus
    abort_task_ids: list[int] = Field(
        default_factory=list, description="Tasks this worker must stop at once."
    )


class TaskFile(BaseModel):
    path: str
    sha256: Sha256
    size: int


class FrameFile(TaskFile):
    """A rendered frame of the job, input of a follow-up task (video)."""

    frame: int


class TileFile(TaskFile):
    """A rendered tile of a tiled still, input of its `merge` task (fetched with
    `kind=tile`)."""

    column: int
    row: int
    columns: int
    rows: int


class TaskAssignment(BaseModel):
    """What a worker gets from a claim: everything it needs to render, nothing more."""

    task_id: int
    job_id: int
    job_name: str
    type: str
    frames: list[int]
    main_file: str
    files: list[TaskFile]
    output_format: OutputFormat | None
    resolution_percentage: int | None
    samples: int | None
    attempt: int
    blender_saved: str | None = Field(
        default=None, description="The Blender version that saved the main .blend."
    )
    blender_version: str | None = Field(
        default=None,
        description="The job's version range; for a render task of a job pinned to a "
        "Blender series, narrowed to that series (`>=4.2,<5,==4.2`), so a worker with "
        "several Blenders renders with the one the job's other frames were made with.",
    )
    device: DeviceKind | None = Field(default=None, description="The job's device kind.")
    task_timeout: float | None = Field(
        default=None,
        description="Seconds without progress after which the worker kills Blender and "
        "fails the task (the manager's task timeout).",
    )
    video: VideoSettings | None = None
    """For a `video` task: what to make."""
    frame_files: list[FrameFile] = Field(default_factory=list)
    """For a `video` task: the job's rendered frames, fetched with `kind=output`."""
    tile: TileSpec | None = None
    """For a tile of a tiled still: which one (render `tile.frame`, upload the tile)."""
    tile_files: list[TileFile] = Field(default_factory=list)
    """For a `merge` task: the still's tiles, all of them."""

    @property
    def render_frames(self) -> list[int]:
        """The frames Blender renders for this task: its own, or the frame of its tile."""
        return self.frames or ([self.tile.frame] if self.tile is not None else [])

    storage: Literal["upload", "shared"] = "upload"
    """'shared': `main_file` is '{variable}/…' on shared storage, `files` is empty."""
    output_dir: str | None = None
    """Shared storage: '{variable}/…' where the frames are also written."""
    output_template: str | None = None
    path_variables: dict[str, dict[str, str]] = Field(default_factory=dict)
    """The manager's shared-storage roots (variable → platform → root)."""


class TaskProgress(_Strict):
    frames_done: int | None = Field(default=None, ge=0)
    frame: int | None = None
    sample: int | None = Field(default=None, ge=0)
    samples_total: int | None = Field(default=None, ge=0)
    render_seconds: float | None = Field(
        default=None, ge=0, description="Blender seconds of the task's finished frames."
    )
    peak_memory_bytes: int | None = Field(default=None, ge=0)
    scene_fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="The scene's frame rate (fps / fps_base), once Blender opened the file: "
        "the job's video uses it unless the job sets its own.",
    )
    log_lines: list[str] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _check_sample(self) -> TaskProgress:
        """People read `sample 10/5` as a broken farm: a sample past the total is a bug in
        the sender, refused rather than shown. (`frames_done` past the task's frames is
        refused by the manager, which knows the task.)"""
        if (
            self.sample is not None
            and self.samples_total is not None
            and self.sample > self.samples_total
        ):
            raise ValueError(f"sample ({self.sample}) is past samples_total ({self.samples_total})")
        return self


class TaskProgressReply(BaseModel):
    keep_going: bool = Field(description="False: the task was canceled or given away; stop.")


class TaskComplete(_Strict):
    frames: list[int] = Field(max_length=MAX_FRAMES_PER_JOB)
    log_lines: list[str] = Field(default_factory=list, max_length=10_000)


class TaskFail(_Strict):
    reason: str = Field(min_length=1, max_length=10_000)
    log_lines: list[str] = Field(default_factory=list, max_length=10_000)


class TaskRelease(_Strict):
    """Give a task back without it counting as a failed attempt (worker shutting down)."""

    reason: str = Field(default="worker shutting down", max_length=1000)


class TaskOutcome(BaseModel):
    task_status: TaskStatus
    job_status: JobStatus


class CompletionOutcome(TaskOutcome):
    """The answer to a completion: the outcome, and the next task if one was asked for."""

    next_task: TaskAssignment | None = Field(
        default=None,
        description="With `?next=true` on a completion: the worker's next task, claimed "
        "in the same transaction (None: nothing to do right now; long-poll a claim).",
    )


class OutputStored(BaseModel):
    id: int
    frame: int | None = Field(description="None for a video.")
    sha256: Sha256
    size: int


class SleepWindow(_Strict):
    """Days and hours a worker sleeps: from `start` on each of `days` until `end`, the
    next day if `end` is before `start` (overnight, `22:00`-`06:00`). `00:00`-`24:00` is
    the whole day. A day listed twice, or a window starting when it ends (which would
    never apply: `in_sleep_window`), is refused as a mistake rather than kept."""

    days: list[Weekday] = Field(min_length=1, max_length=7)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")
    end: str = Field(
        pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$",
        description="HH:MM (24:00 = midnight); may be before start (overnight), not equal",
    )

    @field_validator("days")
    @classmethod
    def _each_day_once(cls, days: list[Weekday]) -> list[Weekday]:
        twice = sorted({day for day in days if days.count(day) > 1}, key=WEEKDAYS.index)
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once")
        return days

    @model_validator(mode="after")
    def _not_empty(self) -> SleepWindow:
        if self.start == self.end:
            raise ValueError(
                f"a window from {self.start} to {self.end} never applies "
                "(the whole day is 00:00-24:00)"
            )
        return self

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SleepWindow | None:
        """A window saved before the checks above: its days once each, None if empty."""
        days = list(dict.fromkeys(data.get("days", [])))
        if data.get("start") == data.get("end"):
            return None
        return cls.model_validate({**data, "days": days})


class SleepSchedule(_Strict):
    """When a worker must not render, e.g. an artist's workstation during office hours."""

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SleepSchedule:
        """A schedule as the database holds it. One saved before windows were checked
        (a day twice, a window that never applies) still reads, as what it meant: such
        a window slept never, so it is left out, and a day twice is once."""
        windows = [SleepWindow.from_stored(window) for window in data.get("windows", [])]
        return cls.model_validate(
            {**data, "windows": [window for window in windows if window is not None]}
        )

    timezone: str = Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Paris")
    windows: list[SleepWindow] = Field(default_factory=list, max_length=50)
    when: When = Field(
        default="after-task",
        description="At a window's start: abort the running task (now) or let it finish.",
    )


class RunnerAction(_Strict):
    action: RunnerActionName
    when: When = Field(
        default="after-task", description="now: abort the running task, which is requeued."
    )


class RunnerInfo(BaseModel):
    id: int
    name: str
    status: WorkerStatus
    admin_state: Literal["enabled", "disabled", "draining"] = "enabled"
    asleep: bool = False
    sleep_schedule: SleepSchedule | None = None
    last_heartbeat: datetime | None
    current_task_id: int | None
    current_job_id: int | None
    current_task_index: int | None = Field(
        default=None,
        description=(
            "The running task's number in its job, as `farmhand job` and the job page show "
            "it, so a listing of runners names it without fetching every busy job."
        ),
    )
    current_job_name: str | None = None
    current_task_frames_done: int | None = Field(
        default=None, description="Frames of the running task finished so far."
    )
    current_task_frame_count: int | None = Field(
        default=None, description="Frames in the running task."
    )
    current_task_tile: TileSpec | None = Field(
        default=None, description="The tile of a still the running task renders."
    )
    address: str | None = Field(
        default=None,
        description="The address the manager sees the runner's requests come from, updated "
        "at every heartbeat. Behind a reverse proxy it is the proxy's unless the manager "
        "trusts its forwarded headers (`--proxy-headers`). The runner's own address is "
        "`capabilities.address`.",
    )
    capabilities: WorkerCapabilities
    registered_at: datetime
    status_note: str | None = Field(
        default=None,
        description="What to read beside its status, as `farmhand runners` and the web's "
        "runners page show it: `too old: upgrade` for a runner whose farmhand is older than "
        "this manager hands tasks to (it gets none, though it may say `idle`); for an idle "
        "runner that gave a task back and has been handed none since, which and why "
        "(`gave task 0 of job 7 back: cannot work: [Errno 28] No space left on device: …`); "
        "null when there is nothing to add (`shared/protocol.status_note`).",
    )


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str


class UserUsage(BaseModel):
    user_id: int
    name: str
    role: str = Field(default="user", description="`admin` or `user`; admins have no quota.")
    jobs: int
    bytes: int = Field(
        description="Distinct blobs of the user's jobs, inputs and outputs, and blobs they "
        "uploaded that no job references: what their quota counts, with unfinished uploads."
    )
    open_uploads: int = Field(default=0, description="Their unfinished resumable uploads.")
    open_upload_bytes: int = Field(
        default=0, description="Bytes their unfinished uploads hold on disk (received so far)."
    )
    open_upload_reserved_bytes: int = Field(
        default=0,
        description="The sizes their unfinished uploads announced: what the quota counts "
        "for them, on top of `bytes`.",
    )


class StorageUsage(BaseModel):
    """What the blob store holds, for admins (`GET /api/admin/usage`)."""

    blobs: int
    total_bytes: int = Field(description="Every recorded blob.")
    referenced_bytes: int = Field(description="Blobs some job's inputs or outputs name.")
    unreferenced_bytes: int = Field(description="Blobs garbage collection will free in time.")
    open_uploads: int = Field(default=0, description="Unfinished resumable uploads.")
    open_upload_bytes: int = Field(
        default=0, description="Bytes unfinished uploads hold on disk, not part of any blob yet."
    )
    thumbnail_files: int = Field(default=0, description="Previews made for the web UI.")
    thumbnail_bytes: int = Field(
        default=0,
        description="What the thumbnail cache (`<data-dir>/thumbnails`) holds, outside the "
        "blob store: a blob's thumbnails go with it, and garbage collection sweeps the rest.",
    )
    disk_total_bytes: int
    disk_free_bytes: int
    blob_retention_days: float
    blob_grace_seconds: float = Field(
        default=3600.0,
        description="How long an upload no job ever used is kept (a file a job used is "
        "kept `blob_retention_days` once unused).",
    )
    user_quota_bytes: int | None = Field(
        default=None, description="The manager's per-user quota; null: no quota."
    )
    users: list[UserUsage]


class GcResult(BaseModel):
    removed: int
    freed_bytes: int
    kept_unreferenced: int = Field(description="Unreferenced blobs inside retention or grace.")
    stray_files: int
