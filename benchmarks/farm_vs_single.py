"""Farm makespan against one Blender on one core.

A job of 48 frames is rendered (a) by one Blender pinned to one core, rendering every
frame in one process, and (b) by a farm of two workers each pinned to its own core
(`taskset`), through a real manager. The figure of merit is

    farm makespan / ideal,   ideal = single-core time / 2

1.0 would be perfect scaling; what is above it is the farm's overhead (claiming,
Blender start-up per chunk, uploads, and the manager sharing the two cores).

Run:  .venv/bin/python benchmarks/farm_vs_single.py [--frames 48] [--chunk 4]
Needs: Linux with `taskset` and at least two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from pinned_farm import makespan

from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobSettings
from farmhand.worker.blender.discovery import find_blender
from farmhand.worker.blender.process import RenderRequest, render


def single_core(blend: Path, frames: list[int], out: Path, blender: str) -> float:
    """Render every frame in one Blender process pinned to core 0; wall seconds."""
    install = find_blender(blender)
    os.sched_setaffinity(0, {0})  # inherited by the Blender child
    try:
        started = time.monotonic()
        result = render(
            install,
            RenderRequest(blend_path=blend, frames=frames, output_dir=out, threads=1),
            log_path=out / "render.log",
            cancel=threading.Event(),
        )
        elapsed = time.monotonic() - started
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    if not result.ok:
        raise SystemExit(f"single-core render failed: {result.error}")
    return elapsed


def farm_makespan(root: Path, blend: Path, frames: list[int], chunk: int, blender: str) -> float:
    """Submit to a farm of two pinned workers; seconds from submit to the last frame."""
    settings = JobSettings(frame_start=frames[0], frame_end=frames[-1], chunk_size=chunk)
    return makespan(root, blend, settings, [0, 1], blender)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--size", default="160x120", help="resolution WxH")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--blender", default="bpy", help="Blender executable, or bpy")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs taskset and two cores")

    width, height = (int(v) for v in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="farmhand-bench-"))
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

    single = single_core(blend, frames, root / "single", args.blender)
    makespan = farm_makespan(root / "farm", blend, frames, args.chunk, args.blender)
    ideal = single / 2
    results = {
        "frames": args.frames,
        "chunk": args.chunk,
        "resolution": args.size,
        "samples": args.samples,
        "blender": install.version,
        "single_core_seconds": round(single, 2),
        "farm_makespan_seconds": round(makespan, 2),
        "ideal_seconds": round(ideal, 2),
        "makespan_over_ideal": round(makespan / ideal, 3),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
