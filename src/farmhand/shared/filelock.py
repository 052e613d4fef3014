"""An exclusive, non-blocking lock on an open file, the operating system's own.

One home for the "is another process on this file?" question: a worker's work dir
(worker/identity.py) and a download's `.part` file (client/client.py) ask it. The lock is
flock (msvcrt on Windows), so a process that is killed leaves none behind.
"""

from __future__ import annotations

import sys


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on `fd` without waiting; False if another holder has it.

    flock locks belong to an open file, not a process: two `open`s of one file in one
    process (two threads) exclude each other too."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
