"""`farmhand submit | jobs | job | cancel | download`: the people's side of the farm."""

from __future__ import annotations

import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePosixPath
from typing import Annotated, cast, get_args

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import MofNCompleteColumn
from rich.table import Table

from farmhand.cli.config import ConfigError, resolve
from farmhand.cli.downloads import Downloaded, download_job, no_video, unfinished
from farmhand.cli.folders import FolderError, check_writable_folder, why
from farmhand.cli.json_events import JsonEvents, errors_as_events
from farmhand.cli.progress import Words, progress, transfer_progress
from farmhand.cli.shown import shown, shown_lines, visible
from farmhand.cli.signals import Terminated, terminated_as_interrupted
from farmhand.cli.words import frames_label, plural
from farmhand.client import (
    FarmhandClient,
    FarmhandError,
    JobPoll,
    ManagerUnreachable,
    is_retryable,
)
from farmhand.client.errors import unreachable_cause, unreachable_words, url_problem
from farmhand.client.packing import PackedProject, PackError
from farmhand.client.retry import QUIET, RetryPolicy, call_with_retry
from farmhand.client.scene_format import MOVIE_FORMATS, saved_format
from farmhand.client.submission import (
    MissingFiles,
    SubmitCanceled,
    SubmitHooks,
    Submitted,
    submit_project,
)
from farmhand.client.transfer import UPLOAD_RETRY
from farmhand.shared.frames import FrameRangeError, parse_frame_spec
from farmhand.shared.images import rendered_format
from farmhand.shared.schemas import (
    MAX_CRF,
    VIDEO_CONTAINERS,
    DeviceKind,
    JobAccepted,
    JobDetail,
    JobSettings,
    JobStatus,
    JobSummary,
    OutputFormat,
    TaskStatus,
    TaskSummary,
    TileGrid,
    VideoCodec,
    VideoContainer,
    VideoSettings,
)

console = Console()
err = Console(stderr=True)

FINISHED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}
_CONTAINERS_BY_CODEC = "; ".join(
    f"{codec}: {', '.join(sorted(containers))}" for codec, containers in VIDEO_CONTAINERS.items()
)
_CRF_BY_CODEC = "; ".join(f"{codec}: 0-{top}" for codec, top in MAX_CRF.items())
MAX_POLL_SECONDS = 1.0
PLAIN_PROGRESS_EVERY = 30.0
"""Seconds between progress lines when stderr is not a terminal (a log file, CI): there
the bar cannot redraw in place, so `follow` writes a line when the status or its reason
changes, and otherwise at most this often while frames get done."""
RETRY_FOR = 600.0
"""Seconds `submit --wait` keeps trying while the manager does not answer (a restart, a
network outage) before it stops waiting; the job renders on either way."""
JOB_LIST = TypeAdapter(list[JobSummary])
DEFAULT_OUTPUT = Path("farmhand-output")
"""Where `submit --wait` puts a job's frames without `--output`: a folder per job in it."""

UrlOption = Annotated[str | None, typer.Option("--url", help="Manager URL (env FARMHAND_URL).")]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="API token (env FARMHAND_TOKEN).", show_default=False)
]
RetryForOption = Annotated[
    float,
    typer.Option(
        "--retry-for",
        min=0.0,
        envvar="FARMHAND_RETRY_FOR",
        help="With --wait: seconds to keep retrying while the manager cannot be reached "
        "(restarting, a network outage) before giving up; the job renders on either way.",
    ),
]


class Failed(typer.Exit):
    """A refusal already printed for people; `message` keeps it for `--json-events`."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message


class Stopped(typer.Exit):
    """Ctrl-C, already said for people (exit 130); `message` keeps it for `--json-events`."""

    def __init__(self, message: str) -> None:
        super().__init__(130)
        self.message = message


UPLOAD_STOPPED = (
    "stopped: the job was not submitted. Run the same command again to submit it: files "
    "already on the farm are not sent again"
)
"""Ctrl-C while packing, hashing or uploading, before any upload began (`canceled_words`
says what became of those that did)."""


def canceled_words(canceled: KeyboardInterrupt) -> str:
    """What Ctrl-C (or SIGTERM) during a submit did: before any upload began, nothing to
    free (`UPLOAD_STOPPED`); once uploads began, what the submit had sent was discarded
    (client/submission.py), or, with a manager that did not answer in time, is kept, and
    running the command again resumes it (client/transfer.py). A file whose bytes may
    still have been on the way is not said to be discarded (`Freed.unsure`): the manager
    may store it after the submit freed what it found, nor one the manager kept
    (`Freed.kept`: a job of the user's, or another submit of theirs, uses it)."""
    if not isinstance(canceled, SubmitCanceled):
        return UPLOAD_STOPPED
    freed = canceled.freed
    if freed.error is None and (freed.unsure or freed.kept):
        left = []
        if freed.kept:
            left.append(
                f"{plural(freed.kept, 'file')} kept by the manager (used by a job or another "
                "submit of yours), still counting against your storage quota"
            )
        if freed.unsure:
            left.append(
                f"perhaps {plural(freed.unsure, 'file')} still on the way when it stopped: if "
                "the manager stores them after all, they count against your storage quota "
                "until garbage collection removes them (farmhand uploads list shows "
                "unfinished uploads)"
            )
        return (
            "stopped: the job was not submitted, and what it had uploaded was discarded "
            f"except {'; and '.join(left)}. Run the same command again to submit it"
        )
    if freed.error is None:
        return (
            "stopped: the job was not submitted, and what it had uploaded was discarded, so "
            "none of it counts against your storage quota. Run the same command again to "
            "submit it"
        )
    return (
        f"stopped: the job was not submitted, and what it had uploaded could not all be "
        f"discarded ({freed.error}). Run the same command again to submit it: a large "
        "file's upload resumes where it stopped (farmhand uploads abort --all discards "
        "unfinished uploads instead)"
    )


def fail(message: str) -> Failed:
    """Print one red line (no traceback) and return the exit to raise."""
    # soft_wrap: a line however long stays one (a path in it stays copyable, greps still
    # match). shown_lines: a message quoting "[a-z]" or "[gpu]" is text, not Rich markup
    # to swallow, and the manager's words in it (a job name, a reason) cannot steer the
    # terminal; the message's own line breaks (a scene's missing files, one a line) stay.
    err.print(f"[red]error:[/red] {shown_lines(message)}", highlight=False, soft_wrap=True)
    return Failed(message)


@contextmanager
def manager_errors() -> Iterator[None]:
    """Turn the manager's (and the config's) errors into one red line and exit 1."""
    try:
        yield
    except (FarmhandError, ConfigError) as exc:
        raise fail(str(exc)) from None


def open_client(url: str | None, token: str | None) -> FarmhandClient:
    """The client of a people's command; a manager URL no request could go to (no
    http:// or https://) is refused here, naming where it is set, rather than retried
    for minutes as if the manager were down."""
    config = resolve(url, token)
    problem = url_problem(config.url)
    if problem is not None:
        raise ConfigError(
            f"the manager URL {config.url!r} (--url, FARMHAND_URL or url in the config "
            f"file) cannot be used: {problem}"
        )
    return FarmhandClient(config.url, config.token, verify=config.verify)


DNS_RETRY_FOR = 10.0
"""Seconds `reach_manager` keeps asking for a host name DNS does not know: a resolver
may fail for a moment, a mistyped name never resolves."""


def reach_manager(client: FarmhandClient, events: JsonEvents | None) -> None:
    """Ask the manager once (`GET /healthz`) before a scene is packed and hashed: one
    that was down was said only after hashing it all, then two minutes of "uploading
    0%". It is asked as an upload would be (`UPLOAD_RETRY`), each outage said at once
    (`retrying` for `--json-events`, which watches the whole submit, a line on stderr
    for people); a URL that cannot work (https:// to a plain-HTTP manager) fails at
    once, a host name DNS does not know after `DNS_RETRY_FOR`. An answer that is an
    error not worth a retry (a proxy's 404) lets the submit go on: it was answered."""
    started = time.monotonic()
    said: list[str] = []

    def ask() -> None:
        try:
            client.health()
        except FarmhandError as exc:
            cause = unreachable_cause(exc)
            if cause == "answered" and not is_retryable(exc):
                return
            if cause in ("answered", "silent") or (
                cause == "dns" and time.monotonic() - started < DNS_RETRY_FOR
            ):
                raise
            raise FarmhandError(unreachable_words(exc, client.base_url)) from exc

    def retrying(error: Exception, pause: float) -> None:
        if events is None and not said:  # `--json-events` says it in its own way
            said.append(unreachable_words(error, client.base_url))
            limit = human_seconds(UPLOAD_RETRY.give_up_after or 0)
            err.print(
                f"[yellow]warning:[/yellow] {shown(said[0])}; retrying for up to {limit} "
                "(Ctrl-C to stop)",
                highlight=False,
                soft_wrap=True,
            )

    try:
        call_with_retry(ask, "reach the manager", UPLOAD_RETRY, logger=QUIET, on_retry=retrying)
    except ManagerUnreachable as exc:
        limit = human_seconds(UPLOAD_RETRY.give_up_after or 0)
        words = unreachable_words(exc, client.base_url)
        raise FarmhandError(f"{words} (gave up after {limit} of retries: {exc})") from exc


def writable_folder(path: Path) -> None:
    """Refuse, before any work, a destination folder that cannot be made or written."""
    try:
        check_writable_folder(path)
    except FolderError as exc:
        raise fail(str(exc)) from None


@contextmanager
def writing_into(folder: Path) -> Iterator[None]:
    """A file that cannot be written during a download (disk full, a name taken by a
    folder) is one line naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise fail(f"cannot write to the folder {folder}{where}: {why(exc)}") from None


@contextmanager
def interrupted(message: str | Callable[[KeyboardInterrupt], str]) -> Iterator[None]:
    """Ctrl-C stops this command, not the job on the farm: say so, and how to go on
    (`message`, or what it makes of the interrupt: a submit's, what it freed), then exit
    130 (the shell's code for an interrupt). After SIGTERM (`Terminated`) exit 143 (128 +
    the signal) without a `--json-events` error: whoever sent it knows."""
    try:
        yield
    except KeyboardInterrupt as stop:
        said = message if isinstance(message, str) else message(stop)
        err.print(visible(said), markup=False, highlight=False, soft_wrap=True)
        terminated = stop if isinstance(stop, Terminated) else stop.__cause__
        if isinstance(terminated, Terminated):
            raise SystemExit(128 + terminated.signum) from None
        raise Stopped(said) from None


@contextmanager
def giving_up(what: str, retry_for: float, message: str) -> Iterator[None]:
    """A manager still unreachable (or still answering 5xx) when `retry_for` seconds of
    retries are spent: one red line saying what was given up and why, then `message`
    (how to go on), exit 1. Errors that retrying cannot fix pass through."""
    try:
        yield
    except FarmhandError as exc:
        if not is_retryable(exc):
            raise
        failed = fail(f"gave up {what} after {human_seconds(retry_for)} of retries: {exc}")
        err.print(visible(message), markup=False, highlight=False, soft_wrap=True)
        raise failed from None


@contextmanager
def left_to_the_farm(job_id: int, output: Path, retry_for: float) -> Iterator[None]:
    """Ctrl-C, or a manager that stays unreachable longer than `retry_for`, ends the
    wait for a job, not the job: either way, say how to follow, fetch or stop it."""
    hint = (
        f"farmhand job {job_id} to follow it, farmhand download {job_id} -o "
        f"{shlex.quote(str(output))} to fetch its outputs once it completes, "
        f"farmhand cancel {job_id} to stop it"
    )
    with (
        interrupted(f"job {job_id} keeps rendering on the farm: {hint}"),
        giving_up(
            f"waiting for job {job_id}",
            retry_for,
            f"job {job_id} may still be rendering on the farm: {hint}",
        ),
    ):
        yield


def retry_policy(retry_for: float) -> RetryPolicy:
    """The client's one retry policy, for `retry_for` seconds of a manager not answering."""
    return RetryPolicy(give_up_after=retry_for)


def trouble(error: Exception) -> str:
    """A retried failure in a few words, free of Rich markup (`[Errno 111]`)."""
    if isinstance(error, ManagerUnreachable):
        return "manager unreachable"
    return f"manager answered {error.status_code}" if isinstance(error, FarmhandError) else "error"


def frame_spec(frames: str) -> tuple[int, int, int]:
    """Start, end and step of a `1-250` / `1-250x5` range, checked before any upload."""
    try:
        return parse_frame_spec(frames)
    except FrameRangeError as exc:
        raise fail(f"--frames {frames!r}: {exc}") from None


def submit(
    file: Annotated[
        str,
        typer.Argument(
            help="The .blend to render (with --shared: its path on the share).",
            show_default=False,
        ),
    ],
    frames: Annotated[
        str, typer.Option(help="Frame range: 1-250, 1-250x5 (every 5th) or 7.")
    ] = "1",
    chunk: Annotated[int, typer.Option(min=1, help="Frames per task.")] = 10,
    tiles: Annotated[
        str | None,
        typer.Option(
            help="Split each frame into COLUMNSxROWS tiles rendered by different workers, "
            "merged into that frame: OpenEXR if the job (--format) or else the scene "
            "writes OpenEXR, 8-bit PNG otherwise (e.g. --frames 7 --tiles 4x4, or "
            "--frames 1-3 --tiles 2x2 --video; --chunk plays no part).",
            show_default=False,
        ),
    ] = None,
    tile_overlap: Annotated[
        int,
        typer.Option(
            min=0,
            max=512,
            help="Pixels each tile renders past its edges, cut off before the merge, so the "
            "denoiser sees across the seams.",
        ),
    ] = 32,
    priority: Annotated[int, typer.Option(min=0, max=100)] = 50,
    name: Annotated[str, typer.Option(help="Job name (default: the file name).")] = "",
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="PNG, JPEG, OPEN_EXR or OPEN_EXR_MULTILAYER (default: as saved when the farm "
            "keeps that format, else PNG).",
        ),
    ] = None,
    resolution_percentage: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
    samples: Annotated[int | None, typer.Option(min=1)] = None,
    video: Annotated[
        bool,
        typer.Option(
            "--video",
            help="Also make a video of the frames (ffmpeg): h264 in mp4 at the scene's frame "
            "rate unless --codec, --container, --fps or --crf (each implies --video) say "
            "otherwise.",
        ),
    ] = False,
    codec: Annotated[
        str | None,
        typer.Option(
            help=f"The video's codec: {', '.join(get_args(VideoCodec))}.", show_default=False
        ),
    ] = None,
    container: Annotated[
        str | None,
        typer.Option(
            help=f"The video's container: {', '.join(get_args(VideoContainer))} "
            f"({_CONTAINERS_BY_CODEC}).",
            show_default=False,
        ),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(
            help="The video's frames per second (default: the scene's).", show_default=False
        ),
    ] = None,
    crf: Annotated[
        int | None,
        typer.Option(
            help=f"The video's quality, lower is better ({_CRF_BY_CODEC}; default: the codec's).",
            show_default=False,
        ),
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option(
            "--max-workers",
            min=1,
            help="At most this many workers on the job at once (default: no limit).",
            show_default=False,
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            "--max-attempts",
            min=1,
            max=100,
            help="Failures before a task fails for good (default: the manager's).",
            show_default=False,
        ),
    ] = None,
    output_template: Annotated[
        str | None,
        typer.Option(
            "--output-template",
            help="How frames are named in downloads and on shared storage, e.g. "
            "'{job}/{frame:04d}.{ext}' (fields {job}, {job_id}, {frame}, {task}, {ext}).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job, then download.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where --wait puts the outputs.")
    ] = None,
    project: Annotated[
        Path | None,
        typer.Option(
            help="The project folder whose layout the job keeps (default: the deepest "
            "folder holding the .blend and every file it uses).",
            show_default=False,
        ),
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Submit even if files the scene uses are missing."),
    ] = False,
    threads: Annotated[int, typer.Option(min=1, max=32, help="Parallel uploads.")] = 4,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="The .blend is on shared storage: nothing is packed or uploaded, the path "
            "is sent as given and each worker reads it from its own mount.",
        ),
    ] = False,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            help="Also write the frames to this folder on shared storage.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help=f"Only workers rendering on this device: {', '.join(get_args(DeviceKind))}.",
            show_default=False,
        ),
    ] = None,
    blender_version: Annotated[
        str | None,
        typer.Option(
            "--blender-version",
            help="Blender versions allowed to render, e.g. '>=4.2,<5' or '5.0'.",
            show_default=False,
        ),
    ] = None,
    require_tags: Annotated[
        list[str] | None,
        typer.Option(
            "--require-tag",
            help="Only workers with this tag (repeat for several; a worker needs all).",
            show_default=False,
        ),
    ] = None,
    json_events: Annotated[
        bool,
        typer.Option(
            "--json-events",
            help="Report progress and the outcome as JSON lines on stdout (for programs, "
            "e.g. the Blender add-on), ending with a 'submitted' or an 'error' event.",
        ),
    ] = False,
    retry_for: RetryForOption = RETRY_FOR,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Pack a .blend with every file it uses, upload what the farm lacks, queue it.

    Textures, linked libraries, sounds, fonts and caches go along; absolute paths are
    made relative in the packed copy (your files are never changed). Files the scene
    uses but that do not exist are listed and the submit refused, unless --allow-missing.
    With --shared the .blend stays where it is, on a share the manager knows.
    """
    events = JsonEvents() if json_events else None
    with errors_as_events(events):
        if events is not None and wait:
            raise fail("--json-events does not combine with --wait")
        if not shared:
            blend = Path(file)
            if not blend.is_file():
                raise fail(f"{file}: no such file")
            if blend.suffix.lower() != ".blend":
                raise fail(f"{file}: not a .blend file")
        first, last, step = frame_spec(frames)
        fmt = output_format.upper() if output_format else None
        if fmt is not None and fmt not in get_args(OutputFormat):
            choices = ", ".join(get_args(OutputFormat))
            raise fail(f"--format {output_format!r}: choose {choices}")
        try:
            settings = JobSettings(
                name=name,
                frame_start=first,
                frame_end=last,
                frame_step=step,
                chunk_size=chunk,
                tiles=tile_grid(tiles, tile_overlap),
                priority=priority,
                output_format=_as_format(fmt),
                resolution_percentage=resolution_percentage,
                samples=samples,
                video=video_settings(video, codec, container, fps, crf),
                max_workers=max_workers,
                max_attempts=max_attempts,
                output_template=output_template,
                device=_as_device(device),
                blender_version=blender_version,
                required_tags=require_tags or [],
                output_dir=output_dir,
            )
        except ValidationError as exc:
            raise fail(settings_error(exc)) from None
        except ValueError as exc:
            raise fail(str(exc)) from None
        if wait:  # before submitting: nobody should render a job whose download must fail
            writable_folder(output or DEFAULT_OUTPUT)
        if not shared and events is None:  # the add-on (--json-events) warns in its panel
            warning = png_frames_warning(Path(file), settings)
            if warning is not None:
                err.print(
                    f"[yellow]warning:[/yellow] {shown(warning)}", highlight=False, soft_wrap=True
                )
        with manager_errors(), open_client(url, token) as client:
            submitted = None
            if shared:
                accepted = client.submit_shared(file, settings)
            else:
                with events.outages(client.base_url) if events else nullcontext():
                    with interrupted(UPLOAD_STOPPED):
                        reach_manager(client, events)
                    submitted = submit_packed(
                        client, Path(file), settings, project, allow_missing, threads, events
                    )
                accepted = submitted.job
            announce(client, accepted, submitted, events)
            if wait:
                destination = output or DEFAULT_OUTPUT / str(accepted.id)
                with left_to_the_farm(accepted.id, destination, retry_for):
                    job = follow(client, accepted.id, retry_for=retry_for)
                finish(client, job, destination, retry_for)


def png_frames_warning(blend: Path, settings: JobSettings) -> str | None:
    """What to tell someone whose scene writes a format the farm renders as PNG (Targa, a
    movie...), as the web form and the add-on tell them: else they learn it from the task
    log, or from the frames. None when the job chooses its format, the farm keeps the
    scene's, or the .blend's format cannot be read (a warning never fails a submit)."""
    if settings.output_format is not None:
        return None
    scene_format = saved_format(blend)
    if scene_format is None or rendered_format(scene_format) == scene_format:
        return None
    said = f"the scene writes {scene_format}; "
    if scene_format in MOVIE_FORMATS:
        movie = "" if settings.video is not None else " and no movie unless --video"
        return said + f"its frames come as PNG{movie}"
    choices = ", ".join(get_args(OutputFormat))
    return said + f"the farm renders its frames as PNG (--format {choices} to choose)"


def announce(
    client: FarmhandClient,
    accepted: JobAccepted,
    submitted: Submitted | None,
    events: JsonEvents | None,
) -> None:
    """Say which job was made: two lines for people, a `submitted` event for programs."""
    where = f"{client.base_url}{accepted.location}"
    page = f"{client.base_url}/jobs/{accepted.id}"  # what a person opens; `where` is the API's
    numbers: dict[str, int] = {}
    if submitted is not None:
        report = submitted.report
        numbers = {
            "files": submitted.files,
            "uploaded_files": report.uploaded_files,
            "skipped_files": report.skipped_files,
            "bytes_sent": report.bytes_sent,
        }
    if events is not None:
        events.emit(
            "submitted", job_id=accepted.id, status=accepted.status, url=where, page=page, **numbers
        )
        return
    if numbers:
        console.print(
            f"{plural(numbers['files'], 'file')}, {numbers['uploaded_files']} uploaded "
            f"({numbers['skipped_files']} already on the farm); "
            f"{plural(numbers['bytes_sent'], 'byte')} sent",
            highlight=False,
        )
    console.print(f"job [bold]{accepted.id}[/bold] {shown(accepted.status)}  {shown(page)}")


def submit_packed(
    client: FarmhandClient,
    file: Path,
    settings: JobSettings,
    project: Path | None,
    allow_missing: bool,
    threads: int,
    events: JsonEvents | None,
) -> Submitted:
    """`submit_project`, its progress shown as bars, or as JSON events if `events`."""
    if events is not None:
        events.emit("packing")
    with (
        interrupted(canceled_words),
        terminated_as_interrupted(),
        nullcontext(events.hooks()) if events else bars(allow_missing) as hooks,
    ):
        try:
            return submit_project(
                client,
                file,
                settings,
                project=project,
                allow_missing=allow_missing,
                threads=threads,
                hooks=hooks,
            )
        except (MissingFiles, PackError) as exc:
            raise fail(str(exc)) from None


@contextmanager
def bars(allow_missing: bool) -> Iterator[SubmitHooks]:
    """Progress hooks drawing bars for hashing and uploading (bytes and files)."""
    with transfer_progress(err, files=True) as bar:
        hashing = bar.add_task("hashing", total=None, files="")
        upload = bar.add_task("uploading", total=None, files="", visible=False)
        counts = [0, 0]

        def packed(tree: PackedProject) -> None:
            for path in tree.missing if allow_missing else ():
                err.print(
                    f"[yellow]missing:[/yellow] {shown(path)}", highlight=False, soft_wrap=True
                )
            bar.update(hashing, total=tree.size, files=f"{len(tree.files)} files")

        def uploading(size: int, files: int) -> None:
            counts[1] = files
            bar.update(hashing, visible=False)
            bar.update(upload, total=size, visible=True, files=f"0/{files} files")

        def advance(size: int, files: int) -> None:
            counts[0] += files
            bar.update(upload, advance=size, files=f"{counts[0]}/{counts[1]} files")

        yield SubmitHooks(
            packed=packed,
            hashed=lambda size: bar.update(hashing, advance=size),
            uploading=uploading,
            advance=advance,
        )


OPTION_NAMES = {
    "required_tags": "--require-tag",
    "blender_version": "--blender-version",
    "output_dir": "--output-dir",
}


def settings_error(exc: ValidationError) -> str:
    """Pydantic's report as one line naming the options, without its URLs and repr."""
    parts = []
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if cause is not None else error["msg"]
        if error["loc"]:
            field = str(error["loc"][0])
            if field == "required_tags" and error["type"] == "string_pattern_mismatch":
                message = "a tag is 1-40 of a-z, 0-9, '.', '_' or '-', starting with a-z or 0-9"
            option = OPTION_NAMES.get(field, "--" + field.replace("_", "-"))
            value = error.get("input")
            message = f"{option} {value!r}: {message}"
        parts.append(message)
    return "; ".join(parts)


def video_settings(
    video: bool, codec: str | None, container: str | None, fps: float | None, crf: int | None
) -> VideoSettings | None:
    """The video `--video` and its options ask for; None if none of them was given.
    Checked here, each refusal naming its option, before anything is packed."""
    chosen = {
        "codec": codec.lower() if codec else None,
        "container": container.lower() if container else None,
        "fps": fps,
        "crf": crf,
    }
    given = {name: value for name, value in chosen.items() if value is not None}
    if not video and not given:
        return None
    try:
        return VideoSettings.model_validate(given)
    except ValidationError as exc:
        raise fail(settings_error(exc)) from None


def tile_grid(spec: str | None, overlap: int = 32) -> TileGrid | None:
    """`4x3`: four columns, three rows."""
    if spec is None:
        return None
    columns, separator, rows = spec.lower().partition("x")
    if not (separator and columns.strip().isdigit() and rows.strip().isdigit()):
        raise fail(f"--tiles {spec!r}: write COLUMNSxROWS, e.g. 4x4")
    try:
        return TileGrid(columns=int(columns), rows=int(rows), overlap=overlap)
    except ValidationError as exc:
        reasons = "; ".join(str(e.get("ctx", {}).get("error") or e["msg"]) for e in exc.errors())
        raise fail(f"--tiles {spec!r}: {reasons}") from None


def _as_device(device: str | None) -> DeviceKind | None:
    """The device kind, named in any case; a wrong name fails listing the choices."""
    if device is None:
        return None
    for kind in get_args(DeviceKind):
        if kind == device.upper():
            return cast(DeviceKind, kind)
    raise fail(f"--device {device!r}: choose {', '.join(get_args(DeviceKind))}")


def _as_format(fmt: str | None) -> OutputFormat | None:
    if fmt == "PNG":
        return "PNG"
    if fmt == "JPEG":
        return "JPEG"
    if fmt == "OPEN_EXR":
        return "OPEN_EXR"
    if fmt == "OPEN_EXR_MULTILAYER":
        return "OPEN_EXR_MULTILAYER"
    return None


def follow(
    client: FarmhandClient,
    job_id: int,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    retry_for: float = RETRY_FOR,
) -> JobDetail:
    """Show frames done/total, the frame and sample in progress, peak memory and the
    manager's time remaining until the job finishes, polling as `Retry-After` asks.

    On a terminal that is one redrawn bar. Elsewhere (output to a file, CI) a bar shows
    nothing until the end, which for a night-long render, or a job waiting for a worker
    that fits, looks like a hang: there it is plain lines instead (`PLAIN_PROGRESS_EVERY`).

    A manager that stops answering (restarted, the network down) is asked again under
    the client's retry policy, the bar saying so, for up to `retry_for` seconds; then
    its last error is raised (`left_to_the_farm` says what to do).
    """
    plain = not err.is_terminal
    said: tuple[str, str | None] | None = None
    said_frames, said_at = -1, 0.0
    policy = retry_policy(retry_for)
    with progress(
        # markup=False: `live` holds the manager's reason, `status` an error's words.
        Words("job {task.fields[job]} {task.fields[status]}", markup=False),
        MofNCompleteColumn(),
        tail=Words("frames {task.fields[live]}", markup=False),
        console=err,
        transient=False,
        disable=plain,
    ) as bar:
        task = bar.add_task("render", total=None, job=job_id, status="queued", live="")
        status = "queued"
        outage: float | None = None  # when the manager stopped answering; None: it answers

        def retrying(error: Exception, pause: float) -> None:
            nonlocal outage
            now = clock()
            if outage is None:
                outage = now
                if plain:
                    err.print(
                        visible(
                            f"job {job_id}: {error}; retrying for up to {human_seconds(retry_for)}"
                        ),
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
            bar.update(
                task,
                status=f"{status} · {trouble(error)} for {human_seconds(now - outage)}, "
                f"retrying for up to {human_seconds(retry_for)}",
                refresh=True,
            )

        while True:
            poll = call_with_retry(
                lambda: poll_to_follow(client, job_id),
                f"follow job {job_id}",
                policy,
                logger=QUIET,
                on_retry=retrying,
                sleep=sleep,
            )
            if outage is not None:
                outage, said = None, None  # plain: a line saying where the job is now
                if plain:
                    err.print(
                        f"job {job_id}: the manager answers again",
                        markup=False,
                        highlight=False,
                    )
            job = poll.job
            status = job.status.value
            bar.update(
                task,
                completed=job.frames_done,
                total=job.frames_total,
                status=job.status,
                live=live_line(job),
            )
            finished = job.status in FINISHED
            if plain:
                state = (job.status.value, job.status_reason)
                now = clock()
                if (
                    state != said
                    or finished
                    or (job.frames_done != said_frames and now - said_at >= PLAIN_PROGRESS_EVERY)
                ):
                    err.print(
                        f"job {job_id} {job.status.value} {job.frames_done}/{job.frames_total} "
                        f"frames · {live_line(job)}",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
                    said, said_frames, said_at = state, job.frames_done, now
            if finished:
                return job
            delay = poll.retry_after if poll.retry_after is not None else MAX_POLL_SECONDS
            sleep(min(max(delay, 0.1), MAX_POLL_SECONDS))


def poll_to_follow(client: FarmhandClient, job_id: int) -> JobPoll:
    """The job as `follow` shows it, asked for about once a second for hours: its detail
    without the tasks (a few KB, where a job of 10,000 tasks with them is 3 MB), plus
    its running tasks (at most `TASK_ROWS`) for the frames and samples in progress,
    asked for only while some run. A manager that ignores `tasks=false` (an older one)
    answered them already."""
    poll = client.poll_job(job_id, tasks=False)
    job = poll.job
    if not job.tasks and job.task_counts.get(TaskStatus.ACTIVE):
        running = client.job_tasks(job_id, status=(TaskStatus.ACTIVE,), limit=TASK_ROWS)
        job.tasks = running.items
    return poll


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def human_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def live_line(job: JobDetail) -> str:
    """What the job is doing now, in one line: the progress bar's text, `farmhand job`."""
    parts = [f"{job.progress:.0f}%"]
    for task in job.tasks:
        if task.frame is not None:
            sample = (
                f" sample {task.sample}/{task.samples_total}"
                if task.sample is not None and task.samples_total
                else ""
            )
            parts.append(f"frame {task.frame}{sample}")
    if job.seconds_per_frame is not None:
        parts.append(f"{job.seconds_per_frame:.1f} s/frame")
    if job.peak_memory_bytes:
        parts.append(f"peak {human_bytes(job.peak_memory_bytes)}")
    if job.eta_seconds is not None and job.status not in FINISHED:
        parts.append(f"eta {human_seconds(job.eta_seconds)}")
    if job.status_reason and job.status not in FINISHED:
        parts.append(visible(job.status_reason))
    return " · ".join(parts)


def finish(
    client: FarmhandClient, job: JobDetail, output: Path, retry_for: float = RETRY_FOR
) -> None:
    """Download a completed job's outputs, named by the job's own template as
    `farmhand download` names them; exit non-zero with the reason otherwise. A manager
    that stops answering meanwhile is waited for as `follow` waits for it."""
    if job.status != JobStatus.COMPLETED:
        reason = job.status_reason or _first_task_error(client, job) or "no reason given"
        raise fail(f"job {job.id} {job.status}: {reason}")
    hint = f"farmhand download {job.id} -o {shlex.quote(str(output))} gets its outputs"
    told = False

    def retrying(error: Exception, pause: float) -> None:
        nonlocal told
        if not told:
            told = True
            err.print(
                visible(
                    f"downloading job {job.id}: {error}; "
                    f"retrying for up to {human_seconds(retry_for)}"
                ),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    with (
        interrupted(f"stopped downloading job {job.id}, which is done: {hint}"),
        giving_up(f"downloading job {job.id}", retry_for, f"job {job.id} is done: {hint}"),
    ):
        written = call_with_retry(
            lambda: download_with_bar(client, job.id, output, job.settings.output_template),
            f"download job {job.id}",
            retry_policy(retry_for),
            logger=QUIET,
            on_retry=retrying,
        )
    say_downloaded(written, output)


UNDONE_TASKS = (TaskStatus.FAILED, TaskStatus.CANCELED)
"""The tasks of a finished job that did not complete: those holding its errors."""


def _first_task_error(client: FarmhandClient, job: JobDetail) -> str | None:
    """A failed or canceled job's first task error, when the job itself gives no reason
    (one stored before jobs kept theirs). `follow` polled without the tasks, so they
    are asked for now, only those that did not complete; none found if that fails."""
    tasks = job.tasks
    if not tasks:
        try:
            tasks = client.job_tasks(job.id, status=UNDONE_TASKS, limit=TASK_ROWS).items
        except FarmhandError:
            return None
    return next((t.last_error for t in tasks if t.last_error), None)


def say_downloaded(written: Downloaded, output: Path) -> None:
    """`10 frames in out (8 already there, not fetched again)`, and a warning naming the
    files that were there with other bytes and were replaced."""
    skipped = written.skipped_note()
    console.print(
        visible(f"{written} in {output}" + (f" {skipped}" if skipped else "")),
        highlight=False,
        markup=False,
    )
    replaced = written.replaced_note(output)
    if replaced is not None:
        err.print(f"[yellow]warning:[/yellow] {shown(replaced)}", highlight=False, soft_wrap=True)


def download_with_bar(
    client: FarmhandClient, job_id: int, output: Path, template: str | None = None
) -> Downloaded:
    with writing_into(output), transfer_progress(err) as bar:
        task = bar.add_task(f"downloading job {job_id}", total=None)
        return download_job(
            client,
            job_id,
            output,
            lambda done, total: bar.update(task, completed=done, total=total),
            template=template,
        )


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the manager's JSON (as the API answers) instead.")
]


def print_json(text: str) -> None:
    """JSON on stdout as is: Rich would wrap and colour it."""
    typer.echo(text)


JOBS_SHOWN = 50
"""Jobs `farmhand jobs` lists without `--limit` or `--all`: a screenful, the newest."""
TASK_ROWS = 20
"""Task rows `farmhand job` shows without `--tasks`: its failed and running tasks first."""


def jobs(
    status: Annotated[
        list[JobStatus] | None,
        typer.Option("--status", help="Only jobs in this state (repeatable).", show_default=False),
    ] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Only this user's jobs.", show_default=False)
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help=f"Show this many (default {JOBS_SHOWN}).", show_default=False
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every job.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List jobs, newest first: the last 50 unless --limit or --all says otherwise."""
    if show_all and limit is not None:
        raise fail("--all shows every job and --limit some of them: give one or the other")
    with manager_errors(), open_client(url, token) as client:
        page = client.jobs(
            status=status or (),
            owner=owner,
            limit=None if show_all else limit or JOBS_SHOWN,
        )
    if as_json:
        print_json(JOB_LIST.dump_json(page.items).decode())
        return
    table = Table("id", "name", "owner", "status", "progress", "frames", "created")
    for job in page.items:
        table.add_row(
            str(job.id),
            shown(job.name),
            shown(job.owner),
            _status(job.status),
            f"{job.progress:.0f}%",
            f"{job.frames_done}/{job.frames_total}",
            job.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
    if page.total > len(page.items):
        console.print(
            f"showing {len(page.items):,} of {page.total:,} jobs; --limit N or --all for more",
            highlight=False,
        )


def job(
    job_id: Annotated[int, typer.Argument(help="Job id.", show_default=False)],
    every_task: Annotated[
        bool, typer.Option("--tasks", help="Show every task (and, with --json, include them).")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one job: how many tasks are in each state, and its failed and running tasks
    (--tasks: every task)."""
    with manager_errors(), open_client(url, token) as client:
        detail = client.get_job(job_id, tasks=False)
        if every_task:
            detail.tasks = client.job_tasks(job_id).items
        if as_json:
            print_json(detail.model_dump_json())
            return
        listed = detail.tasks if every_task else task_rows(client, detail)
    counts = Counter(detail.task_counts)
    console.print(
        f"[bold]job {detail.id}[/bold] {shown(repr(detail.name))} by {shown(detail.owner)}: "
        f"{_status(detail.status)} {detail.progress:.0f}% "
        f"({detail.frames_done}/{detail.frames_total} frames), file {shown(detail.main_file)}"
    )
    if detail.settings_line:
        console.print(f"asks for: {visible(detail.settings_line)}", highlight=False, markup=False)
    blender = blender_line(detail)
    if blender:
        console.print(shown(blender), highlight=False)
    if detail.status_reason:
        console.print(f"reason: {shown(detail.status_reason)}")
    if detail.missing_count:
        console.print(missing_line(detail), highlight=False, markup=False)
    running = [task for task in listed if task.status == TaskStatus.ACTIVE]
    console.print(f"now: {shown(live_line(detail.model_copy(update={'tasks': running})))}")
    total = sum(counts.values())
    counted = "".join(
        f" · {counts[state]:,} {_status(state)}" for state in TaskStatus if counts[state]
    )
    console.print(f"tasks: {total:,}{counted}", highlight=False)
    if listed:
        console.print(task_table(listed))
    if total > len(listed):
        console.print(
            f"{total - len(listed):,} more tasks not shown; --tasks shows every task",
            highlight=False,
        )


NOTABLE_TASKS = (TaskStatus.FAILED, TaskStatus.ACTIVE)
"""The tasks `farmhand job` shows first: what went wrong, and what runs now."""


def task_rows(client: FarmhandClient, detail: JobDetail) -> list[TaskSummary]:
    """The task rows `farmhand job` shows, in one small request however many tasks the
    job has: every task of a small job; of a larger one, its failed and running tasks,
    at most `TASK_ROWS`."""
    if sum(detail.task_counts.values()) <= TASK_ROWS:
        return client.job_tasks(detail.id, limit=TASK_ROWS).items
    return client.job_tasks(detail.id, status=NOTABLE_TASKS, limit=TASK_ROWS).items


def failures_cell(task: TaskSummary) -> str:
    """Its failures, the number `--max-attempts` limits, with its hand-outs when they are
    more than those failures and one run (`0 of 4 hand-outs`): it was given back (a
    worker stopping, a machine that could not work) or requeued by a person, none of
    which is a failure. Alone, hand-outs past the limit read as a retry limit not kept.
    The job page's Failures column says the same."""
    if task.failures is None:  # a manager older than `failures` says only its hand-outs
        return plural(task.attempts, "hand-out")
    if task.attempts > task.failures + 1:
        return f"{task.failures} of {plural(task.attempts, 'hand-out')}"
    return str(task.failures)


def task_table(tasks: list[TaskSummary]) -> Table:
    """Tasks as rows: number, frames (or tile), status, frames done, failures, worker,
    peak memory, last error."""
    table = Table("task", "frames", "status", "done", "failures", "worker", "peak", "error")
    for task in tasks:
        frames = frames_label(task.frames)
        done = f"{task.frames_done}/{len(task.frames)}"
        if task.tile is not None:  # a part of a tiled still
            frames = f"{task.tile.frame} {task.tile.label}"
            done = "1/1" if task.status == "completed" else "0/1"
        elif task.type == "merge":
            frames += " (merge)"
        table.add_row(
            str(task.index),
            shown(frames),
            _status(task.status),
            done,
            failures_cell(task),
            shown(task.worker or ""),
            human_bytes(task.peak_memory_bytes) if task.peak_memory_bytes else "",
            shown(task.last_error or ""),
        )
    return table


def missing_line(detail: JobDetail) -> str:
    """The files the job was knowingly submitted without (`--allow-missing`): its frames
    show them magenta, which a completed job would not otherwise admit."""
    head = f"submitted without {plural(detail.missing_count, 'missing file')}"
    unnamed = detail.missing_count - len(detail.missing_files)
    if not detail.missing_files:
        return head
    if len(detail.missing_files) == 1 and not unnamed:
        return f"{head}: {visible(detail.missing_files[0])}"
    lines = [f"{head}:", *(f"  {visible(path)}" for path in detail.missing_files)]
    if unnamed:
        lines.append(f"  … and {unnamed} more")
    return "\n".join(lines)


def blender_line(detail: JobDetail) -> str:
    """The Blender that saved the job's file and the series its renders run on (the one
    its first render task was claimed with, `blender_pinned`): a job of a 4.2 file can
    render on 5.0 everywhere, and which one it got is what its frames look like."""
    parts = []
    if detail.blender_saved:
        parts.append(f"saved by Blender {detail.blender_saved}")
    if detail.blender_pinned:
        parts.append(f"renders with Blender {detail.blender_pinned} (pinned by its first render)")
    return " · ".join(parts)


def cancel(
    job_id: Annotated[int, typer.Argument(help="Job id.", show_default=False)],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel a job; workers stop its renders within seconds."""
    with manager_errors(), open_client(url, token) as client:
        summary = client.cancel_job(job_id)
    console.print(f"job {summary.id} {_status(summary.status)}")


def download(
    job_id: Annotated[int, typer.Argument(help="Job id.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination folder.")] = Path("."),
    video: Annotated[bool, typer.Option("--video", help="Only the job's video.")] = False,
    frame: Annotated[
        int | None, typer.Option("--frame", help="Only this frame.", show_default=False)
    ] = None,
    as_zip: Annotated[
        bool, typer.Option("--zip", help="One zip of every output (streamed), not files.")
    ] = False,
    inputs: Annotated[
        bool, typer.Option("--inputs", help="The job's input files (as a zip), not outputs.")
    ] = False,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Name outputs like '{job}/{frame:04d}.{ext}' (fields {job}, {job_id}, "
            "{frame}, {task}, {ext}); default: the job's own template.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download a job's outputs: its frames, its video and its compositor File Output
    passes, under the paths `GET /api/jobs/ID/files` lists (frames named by the
    template). Not Blender's previews (the manager's thumbnails) nor the tiles of a
    tiled still (merged into its frame).

    A job that is not completed downloads what it has so far and says so (its state,
    how many frames are rendered) on stderr; that still exits 0, as the files written
    are whole: run it again when the job completes for the rest.
    """
    writable_folder(output)
    with manager_errors(), writing_into(output), open_client(url, token) as client:
        if video:
            path = download_video(client, job_id, output)
            console.print(f"video in {shown(path)}")
            return
        if inputs:
            with transfer_progress(err) as bar:
                task = bar.add_task(f"downloading job {job_id}'s inputs", total=None)
                path = client.download_inputs_zip(
                    job_id,
                    output,
                    into=True,
                    on_chunk=lambda size: bar.advance(task, size),
                    on_size=lambda size: bar.update(task, total=size),
                )
            console.print(f"inputs in {shown(path)}")
            return
        if frame is not None:
            path = client.download_frame(job_id, frame, output, template=template)
            console.print(f"frame {frame} in {shown(path)}")
            return
        detail = client.get_job(job_id, tasks=False)
        if as_zip:
            with transfer_progress(err) as bar:
                task = bar.add_task(f"downloading job {job_id}", total=None)
                path = client.download_outputs_zip(
                    job_id,
                    output,
                    lambda size: bar.advance(task, size),
                    template=template,
                    into=True,
                    on_size=lambda size: bar.update(task, total=size),
                )
            console.print(f"outputs in {shown(path)}")
            warn_unfinished(detail)
            return
        chosen = template or detail.settings.output_template
        written = download_with_bar(client, job_id, output, chosen)
    say_downloaded(written, output)
    warn_unfinished(detail, written.frames, len(written.videos))


def warn_unfinished(job: JobDetail, frames: int | None = None, videos: int | None = None) -> None:
    """Say on stderr that a download holds only part of a job that is not completed,
    with the `frames` and `videos` it wrote (`unfinished`)."""
    note = unfinished(job, frames, videos)
    if note is not None:
        err.print(f"[yellow]warning:[/yellow] {shown(note)}", highlight=False, soft_wrap=True)


def download_video(client: FarmhandClient, job_id: int, output: Path) -> Path:
    """The job's video (an output without a frame number) into `output`."""
    videos = [f for f in client.list_files(job_id) if f.kind == "output" and f.frame is None]
    if not videos:
        raise fail(no_video(client.get_job(job_id, tasks=False)))
    name = PurePosixPath(videos[0].path).name
    dest = output / f"job-{job_id}-{name}"
    return client.download_file(job_id, videos[0].id, dest, sha256=videos[0].sha256)


def _status(status: str) -> str:
    colour = {
        "completed": "green",
        "failed": "red",
        "canceled": "yellow",
        "active": "cyan",
    }.get(status, "white")
    return f"[{colour}]{shown(status)}[/{colour}]"


def register(app: typer.Typer) -> None:
    for command in (submit, jobs, job, cancel, download):
        app.command()(command)
