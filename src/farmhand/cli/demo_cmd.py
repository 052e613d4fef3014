"""`farmhand demo`: a whole farm on this machine, one command, to see it work.

Starts a manager and N workers as child processes (each logging to `DIR/logs/`), builds
a small animated scene, submits it through the same client as `farmhand submit`,
downloads the frames and checks every one is a real image (and, where ffmpeg is
installed, that the workers made an mp4 of them). Nothing is shared between
the processes but HTTP, so the demo exercises exactly what a real farm does.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from farmhand.cli.jobs_cmd import follow, frame_spec
from farmhand.cli.options import port_option
from farmhand.cli.shown import shown, shown_lines
from farmhand.cli.signals import Terminated, ignored, terminated_as_interrupted
from farmhand.client import FarmhandError
from farmhand.localfarm import LocalFarm
from farmhand.shared.schemas import JobSettings, JobStatus, VideoSettings
from farmhand.worker.ffmpeg import FfmpegNotFound, find_ffmpeg

console = Console()
err = Console(stderr=True)


def _has_ffmpeg() -> bool:
    """The demo's workers make a video only if they find ffmpeg as they would."""
    try:
        return find_ffmpeg() is not None
    except FfmpegNotFound:
        return False


def run_demo(
    root: Path,
    workers: int,
    frames: str,
    keep: bool,
    port: int,
    timeout: float,
    blender: str | None,
) -> int:
    """The demo itself; returns the exit code. Children are always stopped."""
    from farmhand.scenes import make_scene
    from farmhand.shared.images import verify_image
    from farmhand.worker.blender.discovery import find_blender

    first, last, step = frame_spec(frames)
    # One Blender for the scene and the workers: a .blend saved by a newer Blender
    # cannot be opened by an older one.
    install = find_blender(blender)
    spec = install.path if install.kind == "executable" else "bpy"
    farm = LocalFarm(root, port=port)
    ok = False
    stopped_by: int | None = None
    try:
        # A `kill` or a closed terminal stops the demo as Ctrl-C does: its manager,
        # workers and their Blenders are stopped, not left running with nobody to stop
        # them.
        with (
            terminated_as_interrupted(signal.SIGTERM, signal.SIGHUP),
            farm.client() as client,
        ):
            console.print(f"starting the manager on {farm.url}")
            farm.start_manager(wait=timeout)
            for index in range(1, workers + 1):
                farm.start_worker(f"demo-worker-{index}", blender=spec)
            console.print(
                f"started {workers} workers with Blender {install.version} ({spec}); "
                "building the demo scene"
            )
            blend = make_scene(
                root / "scene" / "demo.blend",
                "animated",
                install=install,
                width=320,
                height=180,
                frames=f"{first}-{last}",
                samples=8,
            )
            settings = JobSettings(
                name="farmhand demo",
                frame_start=first,
                frame_end=last,
                frame_step=step,
                chunk_size=2,
                video=VideoSettings() if _has_ffmpeg() else None,
            )
            accepted = client.submit_blend(Path(blend), settings)
            console.print(f"submitted job {accepted.id}")
            job = follow(client, accepted.id)
            if job.status != JobStatus.COMPLETED:
                raise FarmhandError(f"job {job.id} {job.status}: {job.status_reason or ''}")
            out = root / "output"
            written = client.download_outputs(job.id, out)
            videos = [path for path in written if path.name == "video.mp4"]
            written = [path for path in written if path not in videos]
            for path in written:
                verify_image(path)
            if len(written) != job.frames_total:
                raise FarmhandError(f"expected {job.frames_total} frames, got {len(written)}")
            # `follow` polls without the tasks (a big job's would be megabytes a poll).
            tasks = client.get_job(job.id, tasks=True).tasks
            workers_used = sorted({t.worker for t in tasks if t.worker})
            ok = True
            console.print(
                f"[green]{len(written)} frames rendered by {shown(', '.join(workers_used))} "
                f"and verified[/green] in {shown(out)}"
            )
            for video in videos:
                console.print(f"[green]video of the frames[/green]: {shown(video)}")
            if keep:
                console.print(f"web: {farm.url}/  (sign in with the admin token)")
                console.print(f"API: {farm.url}/docs")
                console.print(f"admin token: {shown(farm.data_dir / 'admin-token')}")
                console.print("serving until Ctrl-C")
                _serve_forever(farm)
            else:  # the farm stops on the way out: no address that leads nowhere
                console.print("the farm is stopped; `farmhand demo --keep` leaves it running")
    except KeyboardInterrupt as stop:
        console.print("stopping")
        if isinstance(stop, Terminated):
            stopped_by = stop.signum
    except Exception as exc:
        err.print(f"[red]demo failed:[/red] {shown(exc)}", highlight=False, soft_wrap=True)
    finally:
        with ignored(signal.SIGTERM, signal.SIGHUP):  # a second one: still stop
            farm.stop()
    if stopped_by is not None:
        return 128 + stopped_by
    if not ok:
        # The tails quote what users and workers sent the farm (job names, reasons).
        err.print(shown_lines(farm.logs(20)), highlight=False)
        return 1
    return 0


def _serve_forever(farm: LocalFarm) -> None:
    while not farm.dead():
        time.sleep(0.5)
    raise FarmhandError(f"{farm.dead()[0].name} exited")


def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to put everything (default: a temp dir).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="How many workers.")] = 2,
    frames: Annotated[str, typer.Option(help="Frames to render.")] = "1-12",
    keep: Annotated[bool, typer.Option(help="Keep the farm running until Ctrl-C.")] = False,
    port: Annotated[int, port_option("The manager's port; 0 picks a free one.", any_free=True)] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for start-up.")] = 60.0,
    blender: Annotated[
        str | None,
        typer.Option(help="Blender executable, or 'bpy' for the module (default: discovered)."),
    ] = None,
) -> None:
    """Run a manager and workers locally, render an animation, check the frames."""
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="farmhand-demo-"))
    else:
        root = directory.resolve()
        root.mkdir(parents=True, exist_ok=True)
    console.print(f"demo directory: {shown(root)}")
    raise typer.Exit(run_demo(root, workers, frames, keep, port, timeout, blender))
