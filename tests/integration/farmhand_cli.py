"""Running `farmhand` as a user would: its own process, talking to a real manager."""

from __future__ import annotations

import os
import subprocess
import sys

from farmhand.localfarm import LocalFarm


def cli(farm: LocalFarm, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FARMHAND_URL=farm.url, FARMHAND_TOKEN=farm.admin_token, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "farmhand", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
