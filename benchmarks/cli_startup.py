"""How long a `farmhand` command takes to start: every CLI call pays it, and the Blender
add-on runs `farmhand job ID --json` every few seconds while a job renders.

Runs `farmhand --help` (which imports the whole CLI and contacts nothing) several times
and reports the median wall time, plus what importing `farmhand.cli.app` costs and which
of its modules cost most (`python -X importtime`; the code under test is whatever
`farmhand` is importable, so `PYTHONPATH=<old checkout>/src` measures an older one).

Run:  .venv/bin/python benchmarks/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "farmhand", "--help"], check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    profile = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import farmhand.cli.app"],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    rows = []
    for line in profile.splitlines()[1:]:  # "import time: self | cumulative | name"
        _, cumulative_us, name = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative_us), name[1:].rstrip()))  # indentation = depth
    # The CLI's own modules, one level under farmhand.cli.app (two spaces of indent).
    commands = sorted(
        (row for row in rows if row[1].startswith("  ") and row[1][2] != " "), reverse=True
    )[:6]
    print(
        json.dumps(
            {
                "runs": args.runs,
                "median_seconds": round(statistics.median(times), 3),
                "import_ms": round(
                    max(us for us, name in rows if name == "farmhand.cli.app") / 1000
                ),
                "slowest_cli_modules_ms": {name.strip(): round(us / 1000) for us, name in commands},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
