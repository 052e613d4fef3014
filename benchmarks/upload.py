"""Uploading a 1 GiB project of mixed files to a real manager over loopback.

A project is generated with random (incompressible) content: many small files (the
textures and caches of a real shot) and a few large ones (simulation caches, videos).
Its files are hashed and uploaded the way `farmhand submit` does after packing
(`farmhand.client.transfer`: missing-blob check, resumable uploads in threads) to a
manager started as its own process (`farmhand manager`, real SQLite and blob store).
Reported: MB/s of the upload (and of hashing + upload), the peak RSS of the manager
and of this client process, and the bytes a second submit of the same files sends
(must be 0).

Run:  .venv/bin/python benchmarks/upload.py [--size-mib 1024] [--threads 4]
Needs: ~2x the size free on the temp folder's disk (the project and the blob store).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from farmhand.client.transfer import Uploader, hash_files
from farmhand.localfarm import local_farm

MIB = 1024 * 1024


def generate(root: Path, total: int, seed: int = 7) -> dict[str, Path]:
    """~5% of the bytes in small files (4-64 KiB), the rest in a few large ones."""
    rng = random.Random(seed)
    files: dict[str, Path] = {}
    small_budget = total // 20
    made = 0
    index = 0
    while made < small_budget:
        size = rng.randint(4 * 1024, 64 * 1024)
        relative = f"textures/set{index % 20:02d}/tex{index:05d}.png"
        _write(root / relative, size)
        files[relative] = root / relative
        made += size
        index += 1
    large = total - made
    shares = [0.3, 0.25, 0.2, 0.15, 0.1]
    for number, share in enumerate(shares):
        size = (
            int(large * share)
            if number < len(shares) - 1
            else large - sum(int(large * s) for s in shares[:-1])
        )
        relative = f"cache/sim_{number:02d}.vdb"
        _write(root / relative, size)
        files[relative] = root / relative
    return files


def _write(path: Path, size: int) -> None:
    """Random bytes written in 1 MiB pieces (the generator's memory stays small)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        left = size
        while left:
            piece = min(left, MIB)
            handle.write(os.urandom(piece))
            left -= piece


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (VmHWM) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    total = args.size_mib * MIB

    with tempfile.TemporaryDirectory(prefix="farmhand-upload-bench-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        files = generate(root / "project", total)
        size = sum(path.stat().st_size for path in files.values())
        print(f"generated {len(files)} files, {size / MIB:.0f} MiB in "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        client_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        with local_farm(root / "farm") as farm:
            manager = farm.start_manager()
            assert manager.process is not None
            with farm.client() as client:
                started = time.monotonic()
                entries = hash_files(files)
                hashed = time.monotonic()
                first = Uploader(client, threads=args.threads).upload(entries)
                uploaded = time.monotonic()
                again = Uploader(client, threads=args.threads).upload(hash_files(files))
                second = time.monotonic()
            manager_peak = peak_rss_mib(manager.process.pid)
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        shutil.rmtree(root / "project", ignore_errors=True)

    upload_s = uploaded - hashed
    result = {
        "files": len(files),
        "mib": round(size / MIB),
        "threads": args.threads,
        "hash_seconds": round(hashed - started, 2),
        "upload_seconds": round(upload_s, 2),
        "upload_mb_per_s": round(size / 1e6 / upload_s, 1),
        "hash_and_upload_mb_per_s": round(size / 1e6 / (uploaded - started), 1),
        "bytes_sent_first": first.bytes_sent,
        "second_submit_seconds": round(second - uploaded, 2),
        "second_submit_bytes_sent": again.bytes_sent,
        "manager_peak_rss_mib": round(manager_peak, 1),
        "client_peak_rss_mib": round(client_peak, 1),
        "client_rss_before_upload_mib": round(client_before, 1),
    }
    print(json.dumps(result, indent=2))
    if again.bytes_sent != 0:
        raise SystemExit("the second submit sent bytes: deduplication is broken")


if __name__ == "__main__":
    main()
