"""Persistent Blender session against one Blender process per chunk.

100 light frames (tiny resolution, few samples: about 0.2 s of rendering each) are
rendered in chunks by a loop that does what a worker does per task (a fresh output
directory and task log, every frame verified), once with one `BlenderSession` for all
chunks and once with a fresh Blender per chunk (`process.render`, what `--no-sessions`
does). Same machine, same run, same scene and settings.

Reported for each mode: wall seconds, frames per hour, and the per-frame overhead:
wall time per frame minus the pure render time Blender reports (`FrameSaved.seconds`).

Run:  .venv/bin/python benchmarks/sessions.py [--frames 100] [--chunk 4] [--blender bpy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from farmhand.scenes import make_scene
from farmhand.worker.blender.discovery import find_blender
from farmhand.worker.blender.events import Event, FrameSaved, Ready
from farmhand.worker.blender.process import RenderRequest, RenderResult, render
from farmhand.worker.blender.session import BlenderSession

Runner = Callable[..., RenderResult]


def run_chunks(
    run: Runner, blend: Path, chunks: list[list[int]], root: Path, threads: int
) -> dict[str, float]:
    """Render every chunk with `run`; wall seconds, Blender's render seconds, starts."""
    render_seconds = 0.0
    starts = 0
    started = time.monotonic()
    for number, frames in enumerate(chunks):
        events: list[Event] = []
        result = run(
            RenderRequest(blend, frames, root / f"task-{number}", threads=threads),
            log_path=root / f"task-{number}.log",
            on_event=events.append,
        )
        if not result.ok:
            raise SystemExit(f"chunk {number} failed: {result.error}")
        render_seconds += sum(e.seconds for e in events if isinstance(e, FrameSaved))
        starts += sum(isinstance(e, Ready) for e in events)
    return {
        "wall": time.monotonic() - started,
        "render": render_seconds,
        "starts": starts,
    }


def summary(measured: dict[str, float], frames: int) -> dict[str, float]:
    wall = measured["wall"]
    return {
        "wall_seconds": round(wall, 2),
        "render_seconds": round(measured["render"], 2),
        "blender_starts": int(measured["starts"]),
        "frames_per_hour": round(frames * 3600 / wall),
        "ms_per_frame": round(wall / frames * 1000, 1),
        "render_ms_per_frame": round(measured["render"] / frames * 1000, 1),
        "overhead_ms_per_frame": round((wall - measured["render"]) / frames * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--size", default="64x48", help="resolution WxH")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blender", default="bpy", help="Blender executable, or bpy")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    width, height = (int(v) for v in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="farmhand-sessions-"))
    install = find_blender(args.blender)
    blend = make_scene(
        root / "bench.blend",
        "animated",
        install=install,
        width=width,
        height=height,
        frames=f"1-{args.frames}",
        samples=args.samples,
    )
    frames = list(range(1, args.frames + 1))
    chunks = [frames[i : i + args.chunk] for i in range(0, len(frames), args.chunk)]
    load_before = os.getloadavg()

    with BlenderSession(install, threads=args.threads, max_frames=None) as session:
        in_session = run_chunks(session.render, blend, chunks, root / "session", args.threads)

    def fresh(request: RenderRequest, **kwargs: object) -> RenderResult:
        return render(install, request, **kwargs)  # type: ignore[arg-type]

    per_chunk = run_chunks(fresh, blend, chunks, root / "per-chunk", args.threads)

    session_fig = summary(in_session, args.frames)
    fresh_fig = summary(per_chunk, args.frames)
    results = {
        "frames": args.frames,
        "chunk": args.chunk,
        "chunks": len(chunks),
        "resolution": args.size,
        "samples": args.samples,
        "threads": args.threads,
        "blender": f"{install.version} ({install.spec})",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "session": session_fig,
        "process_per_chunk": fresh_fig,
        "speedup": round(session_fig["frames_per_hour"] / fresh_fig["frames_per_hour"], 2),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
