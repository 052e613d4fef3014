"""Where the SQLite file lives: a network filesystem is a known way to lose the farm.

SQLite's WAL mode, which the manager uses (readers never wait for the writer), relies on
shared memory beside the database file, which network filesystems do not provide
reliably, and their file locking is known to fail (sqlite.org: "Write-Ahead Logging" and
"How To Corrupt An SQLite Database File"). People put a farm's data on the studio NAS
naturally, so the manager checks at start and says so loudly, naming the filesystem,
rather than corrupting the queue weeks later. It warns and goes on: blocking a farm
over a detection that may be wrong would be worse. Linux only
(`/proc/self/mountinfo`); elsewhere nothing is checked.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import make_url

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.cephfs",
    }
)
MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem `path` is on (`ext4`, `nfs4`, …), or None if unknown.

    The mount whose mount point is the longest prefix of the resolved path wins; of
    mounts stacked on one point, the last listed (the one on top)."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    target = path.resolve()
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not separator or len(fields) < 5 or not tail:
            continue
        mount_point = Path(_unescape(fields[4]))
        if target != mount_point and mount_point not in target.parents:
            continue
        depth = len(mount_point.parts)
        if best is None or depth >= best[0]:
            best = (depth, tail[0])
    return best[1] if best else None


def network_filesystem(path: Path, mountinfo: str | None = None) -> str | None:
    """The network filesystem `path` is on, or None if it is local (or unknown)."""
    kind = filesystem_type(path, mountinfo)
    return kind if kind in NETWORK_FILESYSTEMS else None


def sqlite_on_network(database_url: str, mountinfo: str | None = None) -> str | None:
    """Why this database URL is unsafe, if it names an SQLite file on a network
    filesystem; None for a local file, an in-memory database or another database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    folder = Path(url.database).parent
    kind = network_filesystem(folder, mountinfo)
    if kind is None:
        return None
    return (
        f"the SQLite database {url.database} is on a network filesystem ({kind}), where "
        "SQLite's file locking and WAL mode are not reliable: the farm's queue may be "
        "corrupted. Put --data-dir on a local disk, or use PostgreSQL (--database-url)"
    )
