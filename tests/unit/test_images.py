"""A frame only counts when it is a whole, readable image of the expected size."""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from farmhand.shared.images import ImageError, ImageInfo, verify_image, verify_image_as


def _png(path: Path, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path, fmt)
    return path


def _attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _exr(width: int, height: int) -> bytes:
    """A minimal, valid single-part scanline OpenEXR: one HALF channel, no compression."""
    channels = b"Y\0" + struct.pack("<iB3xii", 1, 0, 1, 1) + b"\0"
    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = (
        b"\x76\x2f\x31\x01"
        + struct.pack("<I", 2)
        + _attribute("channels", "chlist", channels)
        + _attribute("compression", "compression", b"\0")
        + _attribute("dataWindow", "box2i", window)
        + _attribute("displayWindow", "box2i", window)
        + _attribute("lineOrder", "lineOrder", b"\0")
        + _attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0))
        + _attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0, 0))
        + _attribute("screenWindowWidth", "float", struct.pack("<f", 1.0))
        + b"\0"
    )
    line = b"\0\x3c" * width  # half 1.0
    table_end = len(header) + 8 * height
    chunk = 8 + len(line)
    offsets = struct.pack(f"<{height}Q", *(table_end + y * chunk for y in range(height)))
    chunks = b"".join(struct.pack("<ii", y, len(line)) + line for y in range(height))
    return header + offsets + chunks


def test_png_and_jpeg_report_format_and_size(tmp_path: Path) -> None:
    assert verify_image(_png(tmp_path / "a.png"), 64, 48) == ImageInfo("PNG", 64, 48)
    assert verify_image(_png(tmp_path / "a.jpg", fmt="JPEG")) == ImageInfo("JPEG", 64, 48)


def test_wrong_size_is_refused_with_both_sizes(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="32x24 pixels, expected 64x48"):
        verify_image(_png(tmp_path / "small.png", (32, 24)), 64, 48)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_caught(tmp_path: Path, fmt: str) -> None:
    whole = _png(tmp_path / "whole", (256, 256), fmt)
    Image.effect_noise((256, 256), 60).convert("RGB").save(whole, fmt)
    data = whole.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="damaged or truncated"):
        verify_image(cut)


def test_missing_empty_and_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        verify_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        verify_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("Error: No camera found in scene\n")
    with pytest.raises(ImageError, match="not an image"):
        verify_image(tmp_path / "text.png")


def test_exr_size_comes_from_the_data_window(tmp_path: Path) -> None:
    path = tmp_path / "a.exr"
    path.write_bytes(_exr(64, 48))
    assert verify_image(path, 64, 48) == ImageInfo("OPEN_EXR", 64, 48)
    with pytest.raises(ImageError, match="expected 80x60"):
        verify_image(path, 80, 60)


@pytest.mark.parametrize("keep", [10, 60, 200, 400, -1])
def test_truncated_exr_is_caught_wherever_it_is_cut(tmp_path: Path, keep: int) -> None:
    data = _exr(16, 12)
    path = tmp_path / "cut.exr"
    path.write_bytes(data[:keep])
    with pytest.raises(ImageError, match="OpenEXR"):
        verify_image(path)


def test_exr_with_garbage_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.exr"
    path.write_bytes(b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + b"x" * 5000)
    with pytest.raises(ImageError, match="OpenEXR"):
        verify_image(path)


_BPY_EXR = """
import sys, bpy
out = sys.argv[1]
image = bpy.data.images.new("x", 40, 30, float_buffer=True)
scene = bpy.context.scene
scene.render.image_settings.file_format = "OPEN_EXR"
for codec in ("ZIP", "PIZ", "NONE"):
    scene.render.image_settings.exr_codec = codec
    image.save_render(out + codec + ".exr", scene=scene)
"""


@pytest.mark.blender
def test_exr_written_by_blender_verifies_and_truncation_is_caught(tmp_path: Path) -> None:
    if importlib.util.find_spec("bpy") is None:  # not importorskip: bpy is huge to import
        pytest.skip("needs the bpy module")
    subprocess.run([sys.executable, "-c", _BPY_EXR, str(tmp_path / "b_")], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    for codec in ("ZIP", "PIZ", "NONE"):
        path = tmp_path / f"b_{codec}.exr"
        assert verify_image(path, 40, 30).format == "OPEN_EXR"
        data = path.read_bytes()
        path.write_bytes(data[:-1])
        with pytest.raises(ImageError, match="truncated"):
            verify_image(path)


def test_an_image_must_be_the_format_its_suffix_says(tmp_path: Path) -> None:
    png = _png(tmp_path / "frame.png")
    assert verify_image_as(png, ".PNG").format == "PNG"
    jpeg = _png(tmp_path / "frame.jpg", fmt="JPEG")
    assert verify_image_as(jpeg, ".jpeg").format == "JPEG"
    for suffix in (".exr", ".jpg", ".tiff"):
        with pytest.raises(ImageError, match=f"it is a PNG image, not \\{suffix}"):
            verify_image_as(png, suffix)
    with pytest.raises(ImageError, match=r"not \.blend"):
        verify_image_as(png, ".blend")
