"""The start-up check that warns when the SQLite file is on a network filesystem."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import structlog

from farmhand.manager.app import prepare
from farmhand.manager.db import location
from farmhand.manager.db.location import filesystem_type, network_filesystem, sqlite_on_network
from farmhand.manager.settings import ManagerSettings

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /mnt/nas rw,relatime - nfs4 nas:/export rw,vers=4.2
41 40 0:51 / /mnt/nas/scratch rw,relatime - tmpfs tmpfs rw
42 27 0:52 / /mnt/studio\\040b rw,relatime - cifs //files/studio rw
43 27 0:53 / /mnt/nasty rw,relatime - ext4 /dev/sdb1 rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/render/farm", "ext4"),
        ("/mnt/nas/farm/data", "nfs4"),
        ("/mnt/nas", "nfs4"),
        ("/mnt/nas/scratch/farm", "tmpfs"),  # a local mount inside the share wins
        ("/mnt/studio b/farm", "cifs"),  # mount points escape their spaces
        ("/mnt/nasty/farm", "ext4"),  # a prefix of the name is not a parent folder
    ],
)
def test_the_deepest_mount_holding_the_path_names_its_filesystem(path: str, kind: str) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == kind


def test_only_network_filesystems_are_flagged() -> None:
    assert network_filesystem(Path("/mnt/nas/farm"), MOUNTINFO) == "nfs4"
    assert network_filesystem(Path("/mnt/studio b/x"), MOUNTINFO) == "cifs"
    assert network_filesystem(Path("/srv/farm"), MOUNTINFO) is None


def test_an_sqlite_file_on_a_share_is_named_with_the_way_out() -> None:
    problem = sqlite_on_network("sqlite:////mnt/nas/farm/farmhand.sqlite3", MOUNTINFO)
    assert problem is not None
    assert "/mnt/nas/farm/farmhand.sqlite3" in problem and "nfs4" in problem
    assert "--data-dir" in problem and "PostgreSQL" in problem
    assert sqlite_on_network("sqlite:////srv/farm/farmhand.sqlite3", MOUNTINFO) is None
    assert sqlite_on_network("sqlite://", MOUNTINFO) is None
    assert sqlite_on_network("postgresql+psycopg://h/farm", MOUNTINFO) is None


def test_this_machines_own_mounts_are_read(tmp_path: Path) -> None:
    """The real /proc/self/mountinfo: the test folder is on some filesystem, and a tmpfs
    mounted on it (where root may mount) is seen as one."""
    assert filesystem_type(tmp_path) is not None
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        assert filesystem_type(mount_point / "data") == "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_the_manager_says_so_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    share = f"40 1 0:50 / {tmp_path} rw,relatime - nfs4 nas:/export rw\n"
    monkeypatch.setattr(location, "MOUNTINFO", tmp_path / "mountinfo")
    (tmp_path / "mountinfo").write_text(MOUNTINFO + share)
    with structlog.testing.capture_logs() as events:
        context, _ = prepare(ManagerSettings(data_dir=data))
    context.db.dispose()
    warned = [e for e in events if e["event"] == "database on a network filesystem"]
    assert len(warned) == 1 and warned[0]["log_level"] == "error"
    assert "nfs4" in warned[0]["problem"]
