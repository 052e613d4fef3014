"""Request limits the manager enforces and its clients must know before they send.

A client that learns of a limit from a 413 has often done the expensive part already:
`farmhand submit` packs, hashes and uploads every file of a job before it sends the
manifest. Both sides import the number from here, so they cannot disagree.
"""

from __future__ import annotations

JOB_BODY_MAX_BYTES = 32 * 1024**2
"""The largest JSON body of a request that carries a job's whole manifest (`POST
/api/jobs`, `POST /api/blobs/missing`). `JobCreate.files` takes 100,000 files: an entry
is its path plus about 70 bytes (a SHA-256 in hex, quotes, separators), so 32 MiB holds
100,000 files whose paths average 260 characters (a 14,000-frame image sequence in a
deep project folder uses a tenth of it). Every other JSON body keeps the manager's
`max_body_bytes` (1 MiB): it is parsed in memory, and nothing else needs more."""
