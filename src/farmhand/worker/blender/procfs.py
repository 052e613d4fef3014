"""Reading Linux's /proc for the processes Blender runs as.

A Blender is a process group (its own session): what it uses and whether anything of it
is left are questions about every member of that group, answered from /proc. Processes
come and go while /proc is read, so a member that vanishes mid-look is skipped, never an
error. Where /proc is not Linux's, there are no members.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def stat_fields(entry: Path) -> list[str]:
    """The fields of `entry/stat` after the command name, from `state` on (proc(5)
    field 3 is index 0): the name may hold spaces and parentheses, so the fields start
    after its last `)`. Raises OSError or ValueError if the process is gone."""
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def group_members(pgid: int, proc: Path = PROC) -> Iterator[tuple[Path, list[str]]]:
    """Each process of group `pgid` still in /proc: its /proc folder and `stat_fields`
    (zombies included: a caller that wants only live ones checks `fields[0]`)."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(entry)
            in_group = int(fields[2]) == pgid
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked
        if in_group:
            yield entry, fields
