"""The add-on's only way to the farm: the `farmhand` CLI, run as a child process.

Blender's Python cannot import farmhand (none of its dependencies are there), and a
second HTTP client inside the add-on would drift from the one the CLI uses. So the
add-on runs `farmhand submit --json-events` and `farmhand job --json` and reads their
JSON. Arguments always go as a list, never through a shell: job names and paths are
typed by people. The token goes in the child's environment, not its arguments, where
any user on the machine could read it in `ps`.

No bpy here, and nothing newer than Python 3.10 (Blender 3.4).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

EXECUTABLE = "farmhand.exe" if os.name == "nt" else "farmhand"
TERMINAL = ("submitted", "error", "canceled")
"""Events after which a submit says nothing more; every run ends with exactly one."""


VIDEO_CONTAINERS = {
    "h264": ("mp4", "mkv", "mov"),
    "h265": ("mp4", "mkv", "mov"),
    "vp9": ("mp4", "mkv", "webm"),
}
"""The containers each video codec goes in, first the default: the farm's own table
(`farmhand.shared.schemas.VIDEO_CONTAINERS`), which the add-on cannot import; a test
checks the two agree."""


KEPT_FORMATS = frozenset({"PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER", "TIFF", "WEBP", "BMP"})
"""The scene formats (Blender's `image_settings.file_format`) the farm renders frames in
as the scene saves them; any other comes out as PNG. The farm's own list
(`farmhand.shared.images.KEPT_FORMATS`), which the add-on cannot import; a test checks
the two agree."""


def format_note(scene_format: str) -> "tuple[str, ...]":
    """What the artist is told before a submit when the frames will not come in the
    scene's own format (nothing when they will): a scene saved as Targa, DPX, a movie...
    renders PNG frames, which found only in the download is a surprise. Short lines, as
    the panel is narrow; a report joins them."""
    if scene_format in KEPT_FORMATS:
        return ()
    if scene_format == "FFMPEG":
        return ("Frames come out as PNG, no movie:", "Make a video asks for one")
    return ("Frames come out as PNG:", f"the farm does not collect {scene_format}")


class CliError(Exception):
    """Something a person can fix, said in one line."""


def find_farmhand(configured: str = "") -> str:
    """The `farmhand` executable: the add-on's preference, else on PATH, else beside
    Blender's Python (a Blender started from a desktop menu has no venv on its PATH)."""
    if configured:
        path = os.path.expanduser(configured)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise CliError(
            f"the farmhand CLI set in the add-on's preferences is not an executable: {path}"
        )
    found = shutil.which(EXECUTABLE)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), EXECUTABLE)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    raise CliError(
        "farmhand CLI not found: install farmhand (pip install farmhand), then set its "
        "path in Preferences > Add-ons > farmhand, or run `farmhand addon install`"
    )


def cli_env(url: str, token: str) -> dict[str, str]:
    """The child's environment: the preferences win over the CLI's own config, and an
    empty field leaves the CLI to its usual FARMHAND_URL / FARMHAND_TOKEN / config file."""
    env = dict(os.environ)
    if url:
        env["FARMHAND_URL"] = url
    if token:
        env["FARMHAND_TOKEN"] = token
    env["NO_COLOR"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def submit_args(
    farmhand: str,
    blend: str,
    frame_start: int,
    frame_end: int,
    frame_step: int = 1,
    chunk: int = 10,
    priority: int = 50,
    name: str = "",
    video: bool = False,
    device: str = "",
    tags: Sequence[str] = (),
    tiles: str = "",
    codec: str = "",
    container: str = "",
    max_workers: int = 0,
) -> list[str]:
    """`device` empty: any worker; `tags`: workers must have all (the CLI checks them);
    `tiles` ("4x4"): each frame split into tiles (`--chunk` then plays no part);
    `codec`/`container` for the video (empty: h264 in mp4); `max_workers` 0: no cap."""
    frames = f"{frame_start}-{frame_end}"
    if frame_step > 1:
        frames += f"x{frame_step}"
    args = [farmhand, "submit", "--json-events", f"--frames={frames}"]
    args += [f"--chunk={chunk}", f"--priority={priority}"]
    if name:
        args.append(f"--name={name}")  # `=`: a name starting with '-' stays a value
    if video:
        args.append("--video")
        if codec:
            args.append(f"--codec={codec}")
        if container:
            args.append(f"--container={container}")
    if max_workers > 0:
        args.append(f"--max-workers={max_workers}")
    if device:
        args.append(f"--device={device}")
    args += [f"--require-tag={tag}" for tag in tags]
    if tiles:
        args.append(f"--tiles={tiles}")
    return [*args, "--", blend]


def tag_list(text: str) -> list[str]:
    """Tags as typed in the panel: separated by commas or spaces, each once."""
    tags: list[str] = []
    for tag in text.replace(",", " ").split():
        if tag not in tags:
            tags.append(tag)
    return tags


def one_line(text: str) -> str:
    """A message as one line: Blender's status bar shows only the first."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


WHERE_TO_SET_IT = (
    "no API token: set yours in Preferences > Add-ons > farmhand (API token; the web "
    "UI's Account page makes one), or FARMHAND_TOKEN / the CLI's config file"
)
"""The CLI's own words for a missing token name its `--token` option, which an artist
in Blender has no way to pass."""


CLI_MISSING_FILES = "fix the paths, or submit with --allow-missing to render without them"
"""How the CLI ends its list of the files a scene uses that do not exist
(`farmhand.client.submission.MissingFiles`, which the add-on cannot import; a test
checks the two agree): the add-on has no `--allow-missing`."""
FIND_MISSING_FILES = (
    "In Blender: File > External Data > Report Missing Files lists them, Find Missing "
    "Files looks for them in a folder; fix or remove them, then submit again"
)
CLI_URL_SOURCES = "(--url, FARMHAND_URL or url in the config file)"
"""Where the CLI says a manager URL it refuses comes from (`jobs_cmd.open_client`)."""
ADDON_URL_SOURCE = "(Manager URL in Preferences > Add-ons > farmhand)"


def in_artists_words(message: str) -> str:
    """The CLI's error as the add-on shows it: one line, and where the CLI names what an
    artist in Blender cannot use (`--token`, `--allow-missing`, `--url`), what they
    can. Every path an error takes to the panel goes through here (a submit's error
    event, a failed status call), and every such rewrite is here."""
    line = one_line(message)
    if line.startswith("no API token"):
        return WHERE_TO_SET_IT
    if line.endswith(CLI_MISSING_FILES):
        return f"{line[: -len(CLI_MISSING_FILES)].rstrip()} · {FIND_MISSING_FILES}"
    return line.replace(CLI_URL_SOURCES, ADDON_URL_SOURCE)


def outage_line(event: "dict[str, Any]") -> str:
    """What the panel says while the manager does not answer (a `retrying` event), until
    it does (`reconnected`): the submit is not stuck, and how to stop it."""
    message = str(event.get("message") or "the manager does not answer; retrying")
    return f"{message} — Cancel to stop"


def last_error(stderr: str, returncode: int) -> str:
    """What a failed CLI said: its `error:` line, else its last line (a missing token
    in the add-on's words)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return in_artists_words(line[len("error:") :])
    if lines:
        return lines[-1]
    return f"farmhand exited with code {returncode}"


def _popen(args: list[str], env: dict[str, str], stderr: Any) -> "subprocess.Popen[str]":
    # No console window flashing up on Windows for every call.
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            creationflags=flags,
        )
    except OSError as exc:
        raise CliError(f"cannot run {args[0]}: {exc.strerror or exc}") from exc


class Submit:
    """One `farmhand submit --json-events` child; `events()` yields what it reports.

    `cancel()` may be called from another thread (the UI) while `events()` runs.
    """

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        # stderr to a file: a pipe nobody reads while stdout streams could fill and stall
        # the child; only its last line matters, after the end.
        self._stderr = tempfile.TemporaryFile(  # noqa: SIM115 (closed at the end of events())
            mode="w+", encoding="utf-8", errors="replace"
        )
        self.process = _popen(args, env, self._stderr)
        self.canceled = False

    def cancel(self) -> None:
        self.canceled = True
        if self.process.poll() is None:
            self.process.terminate()

    def events(self) -> Iterator[dict[str, Any]]:
        """The child's events, ending with exactly one of `TERMINAL`."""
        ended = False
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # not ours (a library printing): the events are the contract
                if not isinstance(event, dict) or "event" not in event or ended:
                    continue
                if event["event"] == "error":
                    event["message"] = in_artists_words(str(event.get("message", "")))
                ended = event["event"] in TERMINAL
                yield event
            returncode = self.process.wait()
            if ended:
                return
            if self.canceled:
                yield {"event": "canceled"}
                return
            self._stderr.seek(0)
            message = last_error(self._stderr.read(), returncode)
            yield {"event": "error", "message": one_line(message)}
        finally:
            stdout.close()
            self._stderr.close()
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def run_json(args: list[str], env: dict[str, str], timeout: float = 120) -> Any:
    """Run a `--json` command to its end; its JSON, or CliError with its error line."""
    process = _popen(args, env, subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise CliError(f"farmhand gave no answer in {timeout:.0f} s") from None
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    if result.returncode != 0:
        raise CliError(one_line(last_error(result.stderr, result.returncode)))
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise CliError(f"farmhand answered no JSON: {result.stdout[:200]!r}") from None


def job_status(farmhand: str, env: dict[str, str], job_id: int) -> dict[str, Any]:
    """`farmhand job ID --json`: the manager's view of one job."""
    answer = run_json([farmhand, "job", str(job_id), "--json"], env)
    if not isinstance(answer, dict):
        raise CliError("farmhand job --json did not answer an object")
    return answer


def status_line(job: dict[str, Any]) -> str:
    """`active 40% (4/10 frames)`, plus the reason a job waits or failed."""
    line = f"{job.get('status')} {float(job.get('progress') or 0):.0f}% "
    line += f"({job.get('frames_done', 0)}/{job.get('frames_total', 0)} frames)"
    if job.get("status_reason"):
        line += f": {job['status_reason']}"
    return line


FINISHED = ("completed", "failed", "canceled")
"""Job statuses that stay as they are: the panel stops asking about such a job."""


def auto_refresh_step(job_id: int, status: str, busy: str) -> str:
    """What the panel's auto-refresh does now: "stop" (no job, or it is finished),
    "wait" (another CLI call runs: ask again later) or "refresh"."""
    if not job_id or status in FINISHED:
        return "stop"
    if busy:
        return "wait"
    return "refresh"


def percent(event: dict[str, Any]) -> float | None:
    """0-100 of a `hashing` / `upload` event, None when it has no size."""
    total = event.get("total") or 0
    if not total:
        return None
    return 100.0 * float(event.get("done", 0)) / float(total)
