"""Project zips whose entries farmhand cannot unpack, or cannot lay out on a worker.

Each is refused with a 400 that names the entry and the reason, never a 500, and
nothing of it is stored. The zips are real archives whose headers are edited the way
other tools write them (Windows Explorer's Deflate64, WinZip's AES, a password).
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import FAKE_BLEND, Farm, png_bytes

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def edited(data: bytes, name: str, *, method: int | None = None, flags: int = 0) -> bytes:
    """`data` with entry `name` marked as compressed by `method` and with `flags` set,
    in its local header and in the central directory, as another tool would write it."""
    raw = bytearray(data)
    encoded = name.encode()
    for signature, flag_at, method_at, name_len_at, name_at in (
        (_LOCAL, 6, 8, 26, 30),
        (_CENTRAL, 8, 10, 28, 46),
    ):
        start = raw.find(signature)
        while start != -1:
            (length,) = struct.unpack_from("<H", raw, start + name_len_at)
            if bytes(raw[start + name_at : start + name_at + length]) == encoded:
                (old_flags,) = struct.unpack_from("<H", raw, start + flag_at)
                struct.pack_into("<H", raw, start + flag_at, old_flags | flags)
                if method is not None:
                    struct.pack_into("<H", raw, start + method_at, method)
            start = raw.find(signature, start + 4)
    return bytes(raw)


def upload(farm: Farm, data: bytes) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        "/api/projects",
        headers=farm.admin,
        files={"file": ("project.zip", data, "application/zip")},
    )
    return answer


def stored_blobs(data_dir: Path) -> set[Path]:
    return set((data_dir / "blobs" / "sha256").rglob("*"))


def refused(farm: Farm, data: bytes) -> str:
    """The 400's detail for `data`, checking that nothing of it was stored."""
    before = stored_blobs(farm.data_dir)
    answer = upload(farm, data)
    assert answer.status_code == 400, answer.text
    assert stored_blobs(farm.data_dir) == before
    detail: str = answer.json()["detail"]
    return detail


ENTRIES = {"scene.blend": FAKE_BLEND, "tex/big.png": png_bytes()}


@pytest.mark.parametrize(
    ("method", "said"),
    [
        (9, "compression method 9 (Deflate64)"),
        (98, "compression method 98 (PPMd)"),
        (93, "compression method 93 (Zstandard)"),
        (77, "compression method 77 (unknown)"),
    ],
)
def test_an_entry_in_a_method_farmhand_cannot_unpack_is_named(
    farm: Farm, method: int, said: str
) -> None:
    detail = refused(farm, edited(zip_of(ENTRIES), "tex/big.png", method=method))
    assert "'tex/big.png'" in detail and said in detail, detail
    assert "zip it again with Deflate or Store" in detail


@pytest.mark.parametrize(
    ("compression", "said"),
    [
        (zipfile.ZIP_BZIP2, "compression method 12 (bzip2)"),
        (zipfile.ZIP_LZMA, "compression method 14 (LZMA)"),
    ],
)
def test_a_method_inflated_whole_into_memory_is_refused(
    farm: Farm, compression: int, said: str
) -> None:
    """QA (round 7): a bzip2 entry of a few hundred bytes, unpacked by Python's zipfile,
    inflated a chunk at a time into memory whatever it declared (1.6 GB for 876 bytes).
    Here 256 MiB of zeros, declared as 1 byte: refused before a byte is unpacked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("scene.blend", FAKE_BLEND)
        archive.writestr("tex/zeros.png", b"\0" * (256 << 20), compress_type=compression)
    bomb = buffer.getvalue()
    assert len(bomb) < 1 << 20
    lying = _declared_size(bomb, "tex/zeros.png", 1)
    detail = refused(farm, lying)
    assert "'tex/zeros.png'" in detail and said in detail, detail
    assert "zip it again with Deflate or Store" in detail


def _declared_size(data: bytes, name: str, size: int) -> bytes:
    """`data` with entry `name` declaring `size` bytes unpacked, in both of its headers."""
    raw = bytearray(data)
    encoded = name.encode()
    for signature, size_at, name_len_at, name_at in ((_LOCAL, 22, 26, 30), (_CENTRAL, 24, 28, 46)):
        start = raw.find(signature)
        while start != -1:
            (length,) = struct.unpack_from("<H", raw, start + name_len_at)
            if bytes(raw[start + name_at : start + name_at + length]) == encoded:
                struct.pack_into("<I", raw, start + size_at, size)
            start = raw.find(signature, start + 4)
    return bytes(raw)


@pytest.mark.parametrize("flags", [0x0, 0x1], ids=["aes-method-only", "aes-and-flag"])
def test_a_winzip_aes_entry_is_refused_as_encrypted(farm: Farm, flags: int) -> None:
    detail = refused(farm, edited(zip_of(ENTRIES), "scene.blend", method=99, flags=flags))
    assert "'scene.blend' is encrypted" in detail, detail


def test_a_password_protected_entry_is_refused_as_encrypted(farm: Farm) -> None:
    detail = refused(farm, edited(zip_of(ENTRIES), "scene.blend", flags=0x1))
    assert "'scene.blend' is encrypted" in detail and "without a password" in detail


def test_a_zip_feature_python_lacks_is_a_400_naming_the_entry(farm: Farm) -> None:
    """Compressed patched data (flag bit 5): zipfile raises NotImplementedError."""
    detail = refused(farm, edited(zip_of(ENTRIES), "scene.blend", flags=0x20))
    assert "'scene.blend' cannot be unpacked" in detail and "patched" in detail, detail


def test_data_that_does_not_inflate_is_a_400_naming_the_entry(farm: Farm) -> None:
    data = bytearray(zip_of({"scene.blend": FAKE_BLEND * 50}, zipfile.ZIP_DEFLATED))
    (name_length, extra_length) = struct.unpack_from("<HH", data, 26)
    start = 30 + name_length + extra_length
    data[start : start + 8] = b"\xff" * 8  # not a valid deflate block
    detail = refused(farm, bytes(data))
    assert "'scene.blend' cannot be unpacked" in detail, detail


def test_a_bad_crc_is_a_400_naming_the_entry(farm: Farm) -> None:
    data = bytearray(zip_of({"scene.blend": FAKE_BLEND}))
    (name_length, extra_length) = struct.unpack_from("<HH", data, 26)
    data[30 + name_length + extra_length + 20] ^= 0xFF  # a byte of the stored data
    detail = refused(farm, bytes(data))
    assert "'scene.blend' cannot be unpacked" in detail and "CRC" in detail, detail


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ({"a/s.blend": FAKE_BLEND, "a": b"x"}, ("'a'", "'a/s.blend'", "a file and a folder")),
        ({"s.blend": FAKE_BLEND, "S.blend": FAKE_BLEND + b"2"}, ("'s.blend'", "'S.blend'", "case")),
        (
            {"shot/s.blend": FAKE_BLEND, "Shot/tex.png": b"x", "SHOT": b"y"},
            ("'SHOT'", "'shot/s.blend'", "a file and a folder"),
        ),
    ],
    ids=["file-and-folder", "case", "folder-in-another-case"],
)
def test_entries_that_cannot_be_one_tree_on_a_worker_are_named(
    farm: Farm, entries: dict[str, bytes], named: tuple[str, ...]
) -> None:
    detail = refused(farm, zip_of(entries))
    assert all(part in detail for part in named), detail


def test_a_clean_zip_of_the_same_entries_is_accepted(farm: Farm) -> None:
    """The editing helper leaves a zip it does not edit valid: what the tests above
    refuse is the edit, not the archive."""
    answer = upload(farm, edited(zip_of(ENTRIES), "no-such-entry", method=9))
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["files"]) == set(ENTRIES)
