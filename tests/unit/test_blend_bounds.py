"""`farmhand submit` of a .blend whose reading would exhaust the artist's machine.

blender-asset-tracer (BAT), which packs a scene, decompresses a gzip or zstd .blend whole
into a temporary file, keeps an object for every block and reads the DNA block whole. A
few hundred KB of zstd handed to an artist (a "blend bomb") inflated to gigabytes there,
or a DNA block claiming gigabytes was read into memory. The client now walks the file
first, streaming (`shared/blendbounds.py`), and refuses it in one line, exit 1, with its
memory held to a few MB (tracemalloc's peak, not a timing).
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from typer.testing import CliRunner

from farmhand.cli import jobs_cmd
from farmhand.cli.app import app
from farmhand.client import FarmhandClient
from farmhand.client.packing import PackError, pack
from farmhand.shared import blendbounds
from farmhand.shared.blendbounds import BlendTooLarge, check_blend
from farmhand.worker.blender.discovery import BlenderInstall

runner = CliRunner()
HEADER = b"BLENDER-v304"
"""A Blender 3.4 file's header: 64-bit pointers, little-endian."""
MEMORY_LIMIT = 32 << 20
"""What reading a refused file may take: a few MB of chunks, whatever the file claims."""


def _block(code: bytes, size: int) -> bytes:
    """A block header of a `HEADER` file (code, length, old address, SDNA index, count)."""
    return struct.pack("<4siQii", code, size, 0x1000, 0, 1)


def _zeros(total: int) -> Iterator[bytes]:
    chunk = bytes(16 << 20)
    while total > 0:
        yield chunk[:total]
        total -= len(chunk)


def _zstd(path: Path, head: bytes, zeros: int) -> Path:
    """`head` then `zeros` zero bytes, zstd-compressed as Blender 3.0+ saves, streaming
    (no frame size declared): a few KB on disk."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    with path.open("wb") as out:
        out.write(compressor.compress(head))
        for chunk in _zeros(zeros):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    return path


def _submit(monkeypatch: pytest.MonkeyPatch, blend: Path) -> tuple[int, str, int]:
    """`farmhand submit blend`: exit code, output and tracemalloc's peak. The manager
    is asked only whether it answers (`GET /healthz`, before anything is read): the
    file is refused before anything is sent."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "version": "0", "database": "x"})
        raise AssertionError(f"the manager was asked {request.url.path}")

    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(
        jobs_cmd,
        "open_client",
        lambda url, token: FarmhandClient("http://m.test", "t", transport=transport),
    )
    tracemalloc.start()
    try:
        result = runner.invoke(app, ["submit", str(blend), "--tiles", "2x2", "--token", "t"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result.exit_code, result.output, peak


def test_a_dna_block_claiming_gigabytes_is_refused_without_reading_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 40 KB zstd file whose DNA block claims 2 GB over 256 MB of zeros: BAT read the
    256 MB into memory (and would read 2 GB of an honest-sized file that claims so)."""
    blend = _zstd(tmp_path / "bomb.blend", HEADER + _block(b"DNA1", 2**31 - 1), 256 << 20)
    assert blend.stat().st_size < 1 << 20
    code, output, peak = _submit(monkeypatch, blend)
    assert peak < MEMORY_LIMIT, f"{peak:,} bytes held reading a refused file"
    assert code == 1, output
    assert "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert "bomb.blend: it claims a DNA1 block of 2,147,483,647 bytes: not read" in line


def test_a_zstd_blend_inflating_past_the_bound_is_refused_streaming(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """33 KB inflating to more than 1 GiB (`MAX_INFLATED_FLOOR`): counted as it streams
    and refused there, never written out whole as BAT did."""
    head = HEADER + _block(b"DATA", 2**31 - 1)
    blend = _zstd(tmp_path / "bomb.blend", head, blendbounds.MAX_INFLATED_FLOOR + (16 << 20))
    code, output, peak = _submit(monkeypatch, blend)
    assert code == 1, output
    (line,) = output.strip().splitlines()
    assert "bomb.blend: it inflates to more than 1,024 MiB from" in line
    assert peak < MEMORY_LIMIT


def test_a_zstd_frame_claiming_a_terabyte_is_refused_at_its_header(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A zstd frame header declaring 1 TiB of content (single segment, 8-byte size): no
    byte of it is decompressed."""
    frame = zstandard.FRAME_HEADER + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + bytes(64)
    blend = tmp_path / "claims.blend"
    blend.write_bytes(frame)
    code, output, _ = _submit(monkeypatch, blend)
    assert code == 1, output
    assert "claims.blend: it claims to inflate to 1,048,576 MiB" in output


def test_gzip_and_many_empty_blocks_are_held_to_the_bounds_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Blender before 3.0 saved gzip; zeros read as empty 24-byte blocks, each an object
    in BAT (`MAX_BLOCKS`, lowered here so that the test stays small)."""
    dna = tmp_path / "dna.blend"
    dna.write_bytes(gzip.compress(HEADER + _block(b"DNA1", 1 << 30) + bytes(1 << 20)))
    with pytest.raises(BlendTooLarge, match="claims a DNA1 block of 1,073,741,824 bytes"):
        check_blend(dna)
    monkeypatch.setattr(blendbounds, "MAX_BLOCKS", 1000)
    blocks = _zstd(tmp_path / "blocks.blend", HEADER, 1 << 20)
    with pytest.raises(PackError, match="it has more than 1,000 blocks"):
        pack(blocks)


def test_an_honest_file_passes(tmp_path: Path) -> None:
    """Blocks, a DNA block of an honest size and the end block: nothing to refuse, plain
    or compressed."""
    body = HEADER + _block(b"OB\0\0", 600) + bytes(600) + _block(b"DNA1", 4096) + bytes(4096)
    body += _block(b"ENDB", 0)
    plain = tmp_path / "plain.blend"
    plain.write_bytes(body)
    check_blend(plain)
    check_blend(_zstd(tmp_path / "zstd.blend", body, 0))
    squeezed = tmp_path / "gzip.blend"
    squeezed.write_bytes(gzip.compress(body))
    check_blend(squeezed)


LINKING = """
import sys
import bpy
folder = sys.argv[-1]
bpy.ops.wm.save_as_mainfile(filepath=folder + "/lib.blend")
bpy.ops.wm.read_homefile(use_empty=True)
with bpy.data.libraries.load(folder + "/lib.blend", link=True, relative=True) as (_, into):
    into.objects = ["Cube"]
for linked in into.objects:
    bpy.context.scene.collection.objects.link(linked)
bpy.ops.wm.save_as_mainfile(filepath=folder + "/main.blend")
"""
"""Saves `lib.blend` (the startup scene) and `main.blend`, which links its Cube."""


@pytest.mark.blender
def test_a_linked_library_that_is_a_bomb_is_refused_by_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blender_executable: BlenderInstall
) -> None:
    """An honest scene linking a library that is a blend bomb: only the scene was held to
    the bounds, and BAT, tracing the scene's dependencies, inflated the library (1.2 GB
    and a minute for 51 KB of zstd), then blamed the scene. Every .blend BAT opens is
    checked first now, and the refusal names the library. (The bound is lowered here so
    that the bomb stays small.)"""
    assert blender_executable.path is not None
    built = subprocess.run(
        [blender_executable.path, "-b", "--factory-startup", "--python-expr", LINKING,
         "--", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (tmp_path / "main.blend").is_file(), built.stdout + built.stderr
    monkeypatch.setattr(blendbounds, "MAX_INFLATED_FLOOR", 16 << 20)
    library = _zstd(tmp_path / "lib.blend", HEADER, 32 << 20)
    assert library.stat().st_size < 1 << 20
    code, output, peak = _submit(monkeypatch, tmp_path / "main.blend")
    assert code == 1, output
    assert "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert f"cannot read {library}: it inflates to more than 16 MiB from" in line
    assert peak < MEMORY_LIMIT, f"{peak:,} bytes held reading a refused library"
