"""No Blender outlives its worker, with real processes and a fake Blender.

(a) A worker killed with SIGKILL takes its Blender with it, also a session's Blender
started from a task's thread that has since ended (Linux signals a child when the
*thread* that forked it ends). (b) What a crashed run left anyway (here: a wrapper's
Blender, which the signal does not reach) is killed when a worker starts again; a pid
now used by an unrelated process, and a live worker's Blender, are not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.orphans import PidFiles, run_briefly, start_time
from farmhand.worker.blender.renderer import BlenderTaskRenderer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's prctl")

# A Blender busy rendering: it reads no command (so a closed stdin does not end it),
# ignores SIGTERM, and with FAKE_CHILD starts a child in its group first (as a Blender
# behind a wrapper script would be), writing the child's pid to FAKE_CHILD.
FAKE = r"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child_file = os.environ.get("FAKE_CHILD")
if child_file:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(child_file + ".tmp", "w") as handle:
        handle.write(str(child.pid))
    os.replace(child_file + ".tmp", child_file)
time.sleep(600)
"""

# A worker: starts a Blender as a session does, from a thread that then ends, records it
# in PID_DIR, prints its pid, and waits to be killed.
WORKER = r"""
import sys, threading, time
from pathlib import Path
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.orphans import PidFiles
from farmhand.worker.blender.process import BlenderProcess

install = BlenderInstall("executable", sys.argv[1], "0.0-fake")
started = []
task = threading.Thread(
    target=lambda: started.append(BlenderProcess(install, pid_files=PidFiles(Path(sys.argv[2]))))
)
task.start()
task.join()
print(started[0].pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet is dead)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line[stat_line.rindex(")") + 2] not in "ZX"


def wait_until(condition: object, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fake(tmp_path: Path) -> BlenderInstall:
    path = tmp_path / "blender"
    path.write_text(f"#!{sys.executable}\n{FAKE}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return BlenderInstall("executable", str(path), "0.0-fake")


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups to kill whatever a test left (a failed test leaves an orphan)."""
    left: list[int] = []
    yield left
    for group in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def start_worker(
    fake: BlenderInstall, pid_dir: Path, **env: str
) -> tuple[subprocess.Popen[str], int]:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(fake.path), str(pid_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert worker.stdout is not None
    return worker, int(worker.stdout.readline())


def test_a_killed_worker_takes_its_blender_with_it(
    fake: BlenderInstall, tmp_path: Path, groups: list[int]
) -> None:
    worker, blender = start_worker(fake, tmp_path / "pids")
    groups.append(blender)
    try:
        time.sleep(0.5)
        assert alive(blender), "the thread that asked for Blender ended; Blender lives on"
    finally:
        worker.kill()  # SIGKILL: no cleanup of the worker's runs
        worker.wait()
    assert wait_until(lambda: not alive(blender)), "Blender died with its worker"


def test_a_restarted_worker_kills_what_the_crashed_run_left(
    fake: BlenderInstall, tmp_path: Path, groups: list[int]
) -> None:
    """The Blender behind a wrapper (the child here) escapes the signal; the sweep of the
    next start finds it by its group and its mark, and kills it."""
    pid_dir = tmp_path / "pids"
    child_file = tmp_path / "child"
    worker, blender = start_worker(fake, pid_dir, FAKE_CHILD=str(child_file))
    groups.append(blender)
    try:
        assert wait_until(child_file.exists)
    finally:
        worker.kill()
        worker.wait()
    child = int(child_file.read_text())
    assert wait_until(lambda: not alive(blender)), "the wrapper died with the worker"
    assert alive(child), "but what it started did not: an orphan, still rendering"
    assert [p.name for p in pid_dir.iterdir()] == [f"blender-{blender}.json"]

    renderer = BlenderTaskRenderer(fake, pid_dir=pid_dir)  # the worker starts again
    assert wait_until(lambda: not alive(child)), "the orphan was killed at start"
    assert list(pid_dir.iterdir()) == [], "and its file dropped"
    assert renderer.pid_files.sweep() == [], "nothing left to kill"


def test_the_sweep_kills_a_recorded_blender_whose_worker_is_gone(
    tmp_path: Path, groups: list[int]
) -> None:
    pid_dir = tmp_path / "pids"
    orphan = subprocess.Popen(["sleep", "600"], start_new_session=True)
    groups.append(orphan.pid)
    write_record(pid_dir, orphan.pid, owner=dead_process())
    assert PidFiles(pid_dir).sweep() == [orphan.pid]
    assert orphan.wait(timeout=5) == -signal.SIGKILL


def test_a_reused_pid_and_a_live_workers_blender_are_spared(
    tmp_path: Path, groups: list[int]
) -> None:
    pid_dir = tmp_path / "pids"
    unrelated = subprocess.Popen(["sleep", "600"], start_new_session=True)
    other_workers = subprocess.Popen(["sleep", "600"], start_new_session=True)
    groups += [unrelated.pid, other_workers.pid]
    # The pid of a Blender that ended, handed out again to an unrelated process: same
    # pid, another start time.
    write_record(pid_dir, unrelated.pid, owner=dead_process(), start_shift=-5)
    # The Blender of a worker that runs (this test process).
    write_record(pid_dir, other_workers.pid, owner=os.getpid())
    assert PidFiles(pid_dir).sweep() == []
    time.sleep(0.2)
    assert alive(unrelated.pid) and alive(other_workers.pid)
    assert [p.name for p in pid_dir.iterdir()] == [f"blender-{other_workers.pid}.json"], (
        "the reused pid's file is dropped, the live worker's kept"
    )


def test_a_pid_dir_open_to_others_is_not_trusted(tmp_path: Path, groups: list[int]) -> None:
    pid_dir = tmp_path / "pids"
    orphan = subprocess.Popen(["sleep", "600"], start_new_session=True)
    groups.append(orphan.pid)
    write_record(pid_dir, orphan.pid, owner=dead_process())
    pid_dir.chmod(0o777)
    assert PidFiles(pid_dir).sweep() == []
    assert alive(orphan.pid)


def dead_process() -> tuple[int, int]:
    """(pid, start time) of a process that has ended: a crashed worker."""
    process = subprocess.Popen(["sleep", "0.2"])
    start = start_time(process.pid)
    assert start is not None
    process.wait()
    return process.pid, start


def write_record(
    pid_dir: Path, pid: int, owner: int | tuple[int, int], start_shift: int = 0
) -> None:
    owner_pid, owner_start = owner if isinstance(owner, tuple) else (owner, start_time(owner))
    start = start_time(pid)
    assert start is not None
    pid_dir.mkdir(mode=0o700, exist_ok=True)
    record = {
        "pid": pid,
        "start": start + start_shift,
        "mark": "m",
        "owner": owner_pid,
        "owner_start": owner_start,
        "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
    }
    (pid_dir / f"blender-{pid}.json").write_text(json.dumps(record))


HANGS_WITH_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
"""


def test_a_short_call_that_hangs_is_killed_with_all_it_started(
    tmp_path: Path, groups: list[int]
) -> None:
    """`run_briefly` (Blender's version and device checks): at the timeout the whole
    process group goes, not only the direct child, which `subprocess.run` kills alone."""
    pid_file = tmp_path / "child.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_briefly([sys.executable, "-c", HANGS_WITH_A_CHILD, str(pid_file)], timeout=2)
    child = int(pid_file.read_text())
    groups.append(child)
    assert wait_until(lambda: not alive(child)), "what the hung call started is gone too"


def test_a_short_call_answers_as_subprocess_run_does() -> None:
    result = run_briefly(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); sys.exit(3)"],
        input=b"blender 5.0\n",
        timeout=30,
    )
    assert (result.returncode, result.stdout.strip()) == (3, b"BLENDER 5.0")
