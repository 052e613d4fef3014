"""Multi-part OpenEXR, as Blender 5 writes a multilayer EXR with passes (a part a pass:
`ViewLayer.Combined` in half float, `ViewLayer.Depth`, `ViewLayer.Mist` and
`ViewLayer.Normal` in full float): verified as a valid image, cut and merged with every
part, channel, pixel type, compression and Blender's header attributes kept bit for bit,
and thumbnailed from the Combined part. Deep OpenEXR stays refused, as unsupported, not
as "damaged". The files are written here with the OpenEXR library; the real Blender 5
file is `tests/integration/test_tiles_multipart.py`'s."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import OpenEXR
import pytest
from PIL import Image

from farmhand.manager.web.thumbnails import exr_preview, thumbnail
from farmhand.shared.images import ImageError, ImageInfo, verify_image
from farmhand.worker.blender.events import FrameSaved
from farmhand.worker.blender.process import _cut_out_tile
from farmhand.worker.exr import RENDERED_COMPRESSION, read_exr
from farmhand.worker.merge import MergeError, merge_tiles

WIDTH, HEIGHT = 11, 7
PARTS = ("ViewLayer.Combined", "ViewLayer.Depth", "ViewLayer.Mist", "ViewLayer.Normal")
BLENDER_HEADER = {
    "compression": OpenEXR.ZIP_COMPRESSION,
    "type": OpenEXR.scanlineimage,
    "BlenderMultiChannel": "Blender V2.55.1 and newer",
    "Software": "Blender 5.0.1",
}


def _random(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> npt.NDArray[Any]:
    """Finite values of every magnitude and sign, so a pixel moved or rounded shows."""
    values = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)
    return values.astype(dtype)


def blender5_channels(
    width: int = WIDTH, height: int = HEIGHT, seed: int = 5
) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """Part name → channel name → pixels, laid out as Blender 5.0 writes them."""
    rng = np.random.default_rng(seed)
    shape = (height, width)
    combined = {f"ViewLayer.Combined.{c}": _random(rng, shape, "float16") for c in "RGBA"}
    return {
        "ViewLayer.Combined": combined,
        "ViewLayer.Depth": {"ViewLayer.Depth.Z": _random(rng, shape, "float32")},
        "ViewLayer.Mist": {"ViewLayer.Mist.Z": _random(rng, shape, "float32")},
        "ViewLayer.Normal": {
            f"ViewLayer.Normal.{c}": _random(rng, shape, "float32") for c in "XYZ"
        },
    }


def write_multipart(
    path: Path,
    parts: dict[str, dict[str, npt.NDArray[Any]]],
    compression: OpenEXR.Compression = OpenEXR.ZIP_COMPRESSION,
) -> Path:
    """A multi-part file, one part a key of `parts`, in their order, with Blender's header
    attributes (its metadata on the Combined part only, as Blender 5 writes it) and the
    scene's `compression` in every part; the display window is the first part's size."""
    made = []
    height, width = next(iter(next(iter(parts.values())).values())).shape
    window = (np.array([0, 0], np.int32), np.array([width - 1, height - 1], np.int32))
    for name, channels in parts.items():
        header = dict(BLENDER_HEADER) if name.endswith("Combined") else {
            "compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
        }  # fmt: skip
        header["compression"] = compression
        header["colorInteropID"] = "lin_rec709_scene" if name.endswith("Combined") else "data"
        header["displayWindow"] = window  # one for all parts, as the format wants
        made.append(OpenEXR.Part(header, dict(channels), name))  # it converts the dict's values
    OpenEXR.File(made).write(str(path))
    return path


def read_parts(path: Path) -> list[tuple[str, dict[str, Any], dict[str, npt.NDArray[Any]]]]:
    """(name, header, channels) of each part, in the file's order, read by OpenEXR."""
    file = OpenEXR.File(str(path), separate_channels=True)
    return [
        (p.name(), dict(p.header), {n: c.pixels for n, c in p.channels.items()}) for p in file.parts
    ]


def assert_same_bits(ours: npt.NDArray[Any], theirs: npt.NDArray[Any], what: str) -> None:
    assert ours.dtype == theirs.dtype, f"{what}: pixel type kept"
    assert ours.shape == theirs.shape, what
    unsigned = f"uint{ours.dtype.itemsize * 8}"
    assert np.array_equal(ours.view(unsigned), np.ascontiguousarray(theirs).view(unsigned)), what


# Verifying: a multi-part file is a valid image; deep data is refused as unsupported.


def test_a_multi_part_exr_is_a_valid_image_of_its_size(tmp_path: Path) -> None:
    path = write_multipart(tmp_path / "frame_0001.exr", blender5_channels())
    assert verify_image(path, WIDTH, HEIGHT) == ImageInfo("OPEN_EXR", WIDTH, HEIGHT)
    with pytest.raises(ImageError, match=f"is {WIDTH}x{HEIGHT} pixels, expected 12x7"):
        verify_image(path, 12, 7)


def test_a_truncated_multi_part_exr_is_caught_wherever_it_is_cut(tmp_path: Path) -> None:
    data = write_multipart(tmp_path / "whole.exr", blender5_channels()).read_bytes()
    cut = tmp_path / "cut.exr"
    for keep in range(4, len(data)):
        cut.write_bytes(data[:keep])
        with pytest.raises(ImageError, match="OpenEXR"):
            verify_image(cut)


def test_a_multi_part_exr_that_breaks_the_format_is_damaged(tmp_path: Path) -> None:
    data = write_multipart(tmp_path / "whole.exr", blender5_channels()).read_bytes()
    # Mist's chunk count (7 lines of ZIP: one chunk) claimed as 2: its offset table and
    # every table after it would be misread. Each part's header has one, in part order.
    count = b"chunkCount\0int\0" + struct.pack("<ii", 4, 1)
    at = -1
    for _part in range(3):
        at = data.index(count, at + 1)
    broken = tmp_path / "broken.exr"
    broken.write_bytes(data[:at] + count[:-4] + struct.pack("<i", 2) + data[at + len(count) :])
    with pytest.raises(ImageError, match=r"damaged OpenEXR file: part 2 \('ViewLayer.Mist'\)"):
        verify_image(broken)


def deep_pixels(width: int = 3, height: int = 2) -> npt.NDArray[Any]:
    """A deep channel: a list of samples a pixel (0, 1 or 2 of them)."""
    pixels = np.empty((height, width), dtype=object)
    for y in range(height):
        for x in range(width):
            pixels[y, x] = np.arange((x + y) % 3, dtype=np.float32)
    return pixels


def test_deep_exr_is_refused_as_unsupported_not_as_damaged(tmp_path: Path) -> None:
    deep_header = {"type": OpenEXR.deepscanline, "compression": OpenEXR.ZIPS_COMPRESSION}
    single = tmp_path / "deep.exr"
    OpenEXR.File(deep_header, {"Z": deep_pixels()}).write(str(single))
    multi = tmp_path / "deep_parts.exr"
    flat = OpenEXR.Part({}, {"Y": np.zeros((2, 3), np.float32)}, "flat")
    OpenEXR.File([flat, OpenEXR.Part(deep_header, {"Z": deep_pixels()}, "deep")]).write(str(multi))
    for path, where in ((single, ""), (multi, " (part 'deep')")):
        with pytest.raises(ImageError) as refused:
            verify_image(path)
        assert f"is a deep OpenEXR file{where}" in str(refused.value)
        assert "not support" in str(refused.value)
        assert "damaged" not in str(refused.value)
        with pytest.raises(ImageError, match="deep data, which is not supported"):
            read_exr(path)


# Cutting a tile out of its overlap, as the worker does after a tile's render.


def test_a_tile_is_cut_out_of_a_multi_part_exr_with_every_part_kept(tmp_path: Path) -> None:
    """A border render of 11x7 whose tile is the 4x3 at (5, 2): every part is cut alike,
    in its order, its channels bit for bit in their own pixel types, its header kept."""
    whole = blender5_channels()
    path = write_multipart(tmp_path / "frame_0007.exr", whole)
    event = FrameSaved(frame=7, path=path, seconds=1.0, width=4, height=3, crop=(5, 2, 11, 7))
    _cut_out_tile(event)

    assert verify_image(path, 4, 3).format == "OPEN_EXR"
    cut = read_parts(path)
    assert [name for name, _, _ in cut] == list(PARTS), "every part, in Blender's order"
    for name, header, channels in cut:
        assert sorted(channels) == sorted(whole[name]), name
        for channel, pixels in whole[name].items():
            assert_same_bits(channels[channel], pixels[2:5, 5:9], channel)
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert [list(corner) for corner in header["dataWindow"]] == [[0, 0], [3, 2]]
        assert [list(corner) for corner in header["displayWindow"]] == [[0, 0], [3, 2]]
    combined = cut[0][1]
    assert combined["BlenderMultiChannel"] == "Blender V2.55.1 and newer"
    assert combined["colorInteropID"] == "lin_rec709_scene"
    assert cut[1][1]["colorInteropID"] == "data"


# Merging the tiles of a multi-part frame.

# 11x7 in 3 columns (3, 4, 4 wide) and 2 rows (3 and 4 high), as the driver splits it.
COLUMNS, ROWS = (0, 3, 7, 11), (0, 3, 7)


def cut_tiles(
    tmp_path: Path,
    whole: dict[str, dict[str, npt.NDArray[Any]]],
    compression: OpenEXR.Compression = OpenEXR.ZIP_COMPRESSION,
    columns: tuple[int, ...] = COLUMNS,
    rows: tuple[int, ...] = ROWS,
) -> dict[tuple[int, int], Path]:
    """The 2x3 tiles of `whole` (edges at `columns` and `rows`), each a multi-part file
    cut by numpy, not by farmhand, in `compression` as Blender would write them."""
    made = {}
    for row in range(2):
        for column in range(3):
            (top, bottom), (left, right) = rows[row : row + 2], columns[column : column + 2]
            tile = {
                part: {n: np.ascontiguousarray(p[top:bottom, left:right]) for n, p in chans.items()}
                for part, chans in whole.items()
            }
            path = tmp_path / f"r{row}c{column}.exr"
            made[(row, column)] = write_multipart(path, tile, compression)
    return made


def test_multi_part_tiles_merge_into_the_whole_frame_bit_for_bit(tmp_path: Path) -> None:
    whole = blender5_channels()
    reference = write_multipart(tmp_path / "whole.exr", whole)
    out = tmp_path / "frame.exr"
    assert merge_tiles(cut_tiles(tmp_path, whole), (2, 3), out) == (WIDTH, HEIGHT)

    assert verify_image(out, WIDTH, HEIGHT).format == "OPEN_EXR"
    merged, expected = read_parts(out), read_parts(reference)
    assert [name for name, _, _ in merged] == [name for name, _, _ in expected] == list(PARTS)
    for (name, header, channels), (_, their_header, theirs) in zip(merged, expected, strict=True):
        assert sorted(channels) == sorted(theirs), name
        for channel, pixels in theirs.items():
            assert_same_bits(channels[channel], pixels, channel)
        for attribute in ("compression", "type", "name", "colorInteropID", "chunkCount"):
            assert header[attribute] == their_header[attribute], (name, attribute)
        for window in ("dataWindow", "displayWindow"):
            assert [list(c) for c in header[window]] == [[0, 0], [WIDTH - 1, HEIGHT - 1]]
    assert merged[0][1]["BlenderMultiChannel"] == "Blender V2.55.1 and newer"


# A lossy codec (DWAA, ...): Blender compressed each tile with it; the cut and the merge
# do not compress the decoded pixels a second time, but write them in ZIP, bit for bit.

LOSSY = {  # the codec → the parts of `blender5_channels` it loses detail in
    OpenEXR.DWAA_COMPRESSION: set(PARTS),
    OpenEXR.DWAB_COMPRESSION: set(PARTS),
    OpenEXR.B44_COMPRESSION: set(PARTS),
    OpenEXR.B44A_COMPRESSION: set(PARTS),
    OpenEXR.PXR24_COMPRESSION: set(PARTS) - {"ViewLayer.Combined"},  # float32 only
    OpenEXR.ZIP_COMPRESSION: set(),
    OpenEXR.PIZ_COMPRESSION: set(),
}


def with_a_picture(
    parts: dict[str, dict[str, npt.NDArray[Any]]],
) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """`parts` with a smooth picture in the Combined pass, as a render has: DWA leaves
    noise of every magnitude alone, but rounds a picture's detail, again at each pass."""
    height, width = next(iter(parts["ViewLayer.Combined"].values())).shape
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(7).random((height, width)) * 0.1
    for index, channel in enumerate(parts["ViewLayer.Combined"]):
        picture = 0.5 + 0.4 * np.sin(x / (3.0 + index)) * np.cos(y / 4.0) + noise
        parts["ViewLayer.Combined"][channel] = picture.astype(np.float16)
    return parts


def decoded_frame(tiles: dict[tuple[int, int], Path]) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """The frame the tiles' decoded pixels make, assembled by numpy, part by part."""
    rows: dict[int, list[list[tuple[str, dict[str, npt.NDArray[Any]]]]]] = {}
    for (row, _column), path in sorted(tiles.items()):
        rows.setdefault(row, []).append([(name, chans) for name, _, chans in read_parts(path)])
    frame: dict[str, dict[str, npt.NDArray[Any]]] = {}
    for index, name in enumerate(PARTS):
        names = rows[0][0][index][1]
        frame[name] = {
            channel: np.vstack(
                [np.hstack([tile[index][1][channel] for tile in row]) for row in rows.values()]
            )
            for channel in names
        }
    return frame


@pytest.mark.parametrize("codec", list(LOSSY), ids=lambda c: c.name.removesuffix("_COMPRESSION"))
def test_tiles_in_a_lossy_codec_merge_in_zip_as_decoded_and_others_keep_theirs(
    tmp_path: Path, codec: OpenEXR.Compression
) -> None:
    whole = with_a_picture(blender5_channels(width=40, height=36))  # several DWA blocks a tile
    tiles = cut_tiles(tmp_path, whole, codec, (0, 13, 27, 40), (0, 17, 36))
    decoded = decoded_frame(tiles)
    out = tmp_path / "frame.exr"
    said: list[str] = []
    merge_tiles(tiles, (2, 3), out, on_log=said.append)

    name = codec.name.removesuffix("_COMPRESSION")
    for part, header, channels in read_parts(out):
        lossy = part in LOSSY[codec]
        assert header["compression"] == (OpenEXR.ZIP_COMPRESSION if lossy else codec), part
        assert header.get(RENDERED_COMPRESSION) == (name if lossy else None), part
        for channel, pixels in decoded[part].items():
            assert_same_bits(channels[channel], pixels, channel)
    told = [line for line in said if "losslessly" in line]
    if LOSSY[codec]:
        assert told == [
            f"Blender compressed the tiles with {name}, which loses detail: the frame is "
            f"written with ZIP, losslessly, so the merge adds no loss, and differs from a "
            f"whole render only within {name}'s own"
        ]
    else:
        assert told == []


def test_a_tile_cut_from_a_dwaa_render_is_its_decoded_pixels_in_zip(tmp_path: Path) -> None:
    """The cut does not compress the tile a second time either, and the merge of such
    tiles (in ZIP by then) still says Blender's codec."""
    whole = with_a_picture(blender5_channels(width=40, height=36))
    path = write_multipart(tmp_path / "frame_0007.exr", whole, OpenEXR.DWAA_COMPRESSION)
    rendered = {name: chans for name, _, chans in read_parts(path)}
    event = FrameSaved(frame=7, path=path, seconds=1.0, width=20, height=16, crop=(5, 2, 40, 36))
    _cut_out_tile(event)

    for part, header, channels in read_parts(path):
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION, part
        assert header[RENDERED_COMPRESSION] == "DWAA"
        for channel, pixels in rendered[part].items():
            assert_same_bits(channels[channel], pixels[2:18, 5:25], channel)
    out = tmp_path / "merged.exr"
    said: list[str] = []
    merge_tiles({(0, 0): path}, (1, 1), out, on_log=said.append)
    assert any("compressed the tiles with DWAA" in line for line in said), said
    assert read_parts(out)[0][1]["compression"] == OpenEXR.ZIP_COMPRESSION


def test_tiles_whose_parts_differ_make_no_frame(tmp_path: Path) -> None:
    whole = blender5_channels()
    made = cut_tiles(tmp_path, whole)
    no_mist = {part: chans for part, chans in whole.items() if part != "ViewLayer.Mist"}
    (tmp_path / "odd").mkdir()
    made[(1, 2)] = cut_tiles(tmp_path / "odd", no_mist)[(1, 2)]
    out = tmp_path / "frame.exr"
    differ = r"r1c2 has the channels part ViewLayer.Combined: .*but r0c0 has .*"
    with pytest.raises(
        MergeError, match=differ + r"part ViewLayer.Mist: ViewLayer.Mist.Z \(float32\)"
    ):
        merge_tiles(made, (2, 3), out)
    assert not out.exists()


def test_a_file_whose_parts_differ_in_size_is_refused_as_unsupported(tmp_path: Path) -> None:
    parts = blender5_channels()
    parts["ViewLayer.Mist"] = {"ViewLayer.Mist.Z": np.zeros((3, 4), np.float32)}
    path = write_multipart(tmp_path / "odd.exr", parts)
    assert verify_image(path).format == "OPEN_EXR", "a valid file all the same"
    with pytest.raises(ImageError, match=r"parts differ in size \(.*ViewLayer.Mist 4x3"):
        read_exr(path)


# Thumbnails: the Combined part's colours, whatever the order of the parts.


def test_the_thumbnail_of_a_multi_part_exr_is_its_combined_part(tmp_path: Path) -> None:
    shape = (HEIGHT, WIDTH)
    red = {
        f"ViewLayer.Combined.{c}": np.full(shape, v, np.float16)
        for c, v in zip("RGBA", (1, 0, 0, 1), strict=True)
    }
    green_normals = {
        f"ViewLayer.Normal.{c}": np.full(shape, v, np.float32)
        for c, v in zip("XYZ", (0, 1, 0), strict=True)
    }
    bright = {f"ViewLayer.Vector.{c}": np.full(shape, 1, np.float32) for c in "RGBA"}
    # Passes before the Combined part, one of them with R, G, B and A channels.
    parts: dict[str, dict[str, npt.NDArray[Any]]] = {
        "ViewLayer.Normal": green_normals,
        "ViewLayer.Vector": bright,
        "ViewLayer.Combined": red,
    }
    path = write_multipart(tmp_path / "frame.exr", parts)

    preview = exr_preview(path)
    assert preview.size == (WIDTH, HEIGHT)
    assert preview.getpixel((3, 3)) == (255, 0, 0)

    made = thumbnail(tmp_path / "cache", path, "a" * 64, "frames/0001.exr")
    with Image.open(made) as shown:
        assert shown.size == (WIDTH, HEIGHT), "the frame, not the placeholder tile"
        red_, green, blue = shown.convert("RGB").getpixel((3, 3))  # type: ignore[misc]
        assert red_ > 200 and green < 40 and blue < 40
