"""A large still in tiles on two workers against the same still whole on one.

One frame is rendered through a real manager (a) whole, by one worker pinned to one
core, and (b) as a tiled still (`--tiles`, default 2x2) by two workers, each pinned to
its own core (`taskset`), every Blender with one thread. The figure of merit is

    tiled makespan / ideal,   ideal = whole makespan / 2

1.0 would be perfect scaling; above it is what tiling costs: each tile's overlap
(`--overlap` pixels rendered past its edges, cut off before the merge), Blender's
per-tile set-up (scene sync, BVH), the uploads, the merge, and the manager on the same
two cores.

Run:  .venv/bin/python benchmarks/tiles_vs_whole.py [--size 640x480] [--samples 64]
Needs: Linux with `taskset` and at least two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from pinned_farm import makespan

from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobSettings, TileGrid
from farmhand.worker.blender.discovery import find_blender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x480", help="resolution WxH")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tiles", default="2x2", help="COLUMNSxROWS")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--blender", default="bpy", help="Blender executable, or bpy")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs taskset and two cores")

    width, height = (int(v) for v in args.size.split("x"))
    columns, rows = (int(v) for v in args.tiles.split("x"))
    root = Path(tempfile.mkdtemp(prefix="farmhand-bench-"))
    install = find_blender(args.blender)
    blend = make_scene(
        root / "still.blend", "animated", install=install,
        width=width, height=height, frames="1-1", samples=args.samples,
    )  # fmt: skip
    whole = makespan(
        root / "whole", blend, JobSettings(frame_start=1, frame_end=1), [0], args.blender
    )
    grid = TileGrid(columns=columns, rows=rows, overlap=args.overlap)
    tiled = makespan(
        root / "tiled", blend, JobSettings(frame_start=1, frame_end=1, tiles=grid), [0, 1],
        args.blender,
    )  # fmt: skip
    results = {
        "resolution": args.size,
        "samples": args.samples,
        "tiles": args.tiles,
        "overlap": args.overlap,
        "blender": install.version,
        "whole_one_worker_seconds": round(whole, 2),
        "tiled_two_workers_seconds": round(tiled, 2),
        "ideal_seconds": round(whole / 2, 2),
        "tiled_over_ideal": round(tiled / (whole / 2), 3),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
