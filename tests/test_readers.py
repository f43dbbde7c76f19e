"""Readers of vista2d_io: layouts and axes, dtypes, metadata, and one-line UserErrors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from vista2d_io.readers import PillowReader, TiffReader

import vista2d_core as v2d
from vista2d_core.errors import UserError

RNG = np.random.default_rng(0)
H, W = 12, 16


def tiff_reader() -> TiffReader:
    return v2d.create("readers", "tiff")


def pillow_reader() -> PillowReader:
    return v2d.create("readers", "png")


def random(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return RNG.random(shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def test_readers_load_through_the_registry() -> None:
    assert v2d.load("readers", "tiff") is TiffReader
    assert v2d.load("readers", "png") is PillowReader
    assert {".tif", ".tiff"} <= set(TiffReader.suffixes)
    assert {".png", ".jpg", ".jpeg", ".bmp"} <= set(PillowReader.suffixes)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((H, W), "YX"),  # grey
        ((H, W, 1), "YXQ"),  # tifffile's shaped metadata names no axis it cannot tell
        ((H, W, 2), "QYX"),  # stored as H pages of (W, 2): the file's own layout, reported as it is
        ((H, W, 3), "YXC"),  # RGB samples (S) are channels
        ((2, H, W), "QYX"),
        ((5, H, W), "QYX"),
        ((1, 1, H, W), "QQYX"),  # singleton axes kept: the core drops them
        ((1, H, W, 3), "QYXC"),
    ],
)
def test_tiff_data_in_file_order_with_axes(
    tmp_path: Path, shape: tuple[int, ...], axes: str, dtype: type
) -> None:
    """Readers report the file's layout (no squeezing, no transposing); Q for axes the file does not name."""
    data = random(shape, dtype)
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, data, photometric="rgb" if shape[-1] == 3 else "minisblack")
    image = tiff_reader().read(path)
    assert image.data.dtype == dtype
    np.testing.assert_array_equal(image.data, data)
    assert image.axes == axes
    assert image.metadata["shape"] == shape
    assert image.path == path


def test_tiff_rgba_samples_are_channels(tmp_path: Path) -> None:
    data = random((H, W, 4), np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tiff", data, photometric="rgb", extrasamples=["unassalpha"])
    image = tiff_reader().read(tmp_path / "rgba.tiff")
    assert image.axes == "YXC"
    np.testing.assert_array_equal(image.data, data)


def test_tiff_higher_dimensional_data_is_reported_not_refused(tmp_path: Path) -> None:
    """The reader no longer refuses 4-D data: it names the axes (Q: unnamed) and the core decides."""
    path = tmp_path / "stack.tif"
    data = random((2, 3, H, W), np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack")
    image = tiff_reader().read(path)
    assert image.axes == "QQYX"
    np.testing.assert_array_equal(image.data, data)


def test_tiff_keeps_imagej_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "calibrated.tif"
    tifffile.imwrite(
        path,
        random((H, W), np.uint16),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"axes": "YX", "unit": "um"},
    )
    metadata = tiff_reader().read(path).metadata
    assert metadata["pixel_size"] == pytest.approx(0.25)
    assert metadata["unit"] == "um"
    assert metadata["axes"] == "YX"


def test_tiff_keeps_ome_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "calibrated.ome.tif"
    tifffile.imwrite(path, random((H, W), np.uint16), ome=True, metadata={"PhysicalSizeX": 0.5})
    assert tiff_reader().read(path).metadata["pixel_size"] == pytest.approx(0.5)


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 1), (np.uint16, 1), (np.uint8, 3), (np.uint8, 4)])
def test_png_layouts(tmp_path: Path, dtype: type, channels: int) -> None:
    """Grey 8-bit, grey 16-bit, RGB and RGBA (kept as 4 channels)."""
    shape = (H, W) if channels == 1 else (H, W, channels)
    data = random(shape, dtype)
    path = tmp_path / "image.png"
    PILImage.fromarray(data).save(path)
    image = pillow_reader().read(path)
    assert image.data.dtype == dtype
    assert image.data.shape == (channels, H, W)
    np.testing.assert_array_equal(image.data, data.reshape(H, W, channels).transpose(2, 0, 1))


def test_bmp_rgb(tmp_path: Path) -> None:
    data = random((H, W, 3), np.uint8)
    PILImage.fromarray(data).save(tmp_path / "image.bmp")
    np.testing.assert_array_equal(pillow_reader().read(tmp_path / "image.bmp").data, data.transpose(2, 0, 1))


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3)])
@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg(tmp_path: Path, mode: str, channels: int, suffix: str) -> None:
    """A flat colour survives JPEG within a few grey levels, in RGB order (or as its luma when grey)."""
    data = np.full((H, W, 3), (200, 100, 50), np.uint8)
    path = tmp_path / f"image{suffix}"
    PILImage.fromarray(data).convert(mode).save(path)
    image = pillow_reader().read(path)
    assert image.data.dtype == np.uint8
    assert image.data.shape == (channels, H, W)
    expected = [124] if mode == "L" else [200, 100, 50]  # luma: 0.299 R + 0.587 G + 0.114 B
    assert np.abs(image.data.astype(int) - np.array(expected)[:, None, None]).max() <= 3


def test_palette_becomes_rgb_or_grey(tmp_path: Path) -> None:
    colour = PILImage.fromarray(random((H, W, 3), np.uint8)).convert("P")
    colour.save(tmp_path / "colour.png")
    expected = np.asarray(colour.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(pillow_reader().read(tmp_path / "colour.png").data, expected)

    grey = PILImage.fromarray(random((H, W), np.uint8)).convert("P")
    grey.save(tmp_path / "grey.png")
    image = pillow_reader().read(tmp_path / "grey.png")
    assert image.data.shape == (1, H, W)
    np.testing.assert_array_equal(image.data[0], np.asarray(grey.convert("L")))


def test_grey_alpha_and_bilevel_become_grey(tmp_path: Path) -> None:
    """Grey+alpha keeps the grey values (the alpha is dropped); bilevel becomes 0 and 255."""
    grey_alpha = random((H, W, 2), np.uint8)
    PILImage.fromarray(grey_alpha).save(tmp_path / "la.png")
    image = pillow_reader().read(tmp_path / "la.png")
    assert image.data.shape == (1, H, W) and image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data[0], grey_alpha[..., 0])
    bits = random((H, W), np.uint8) > 127
    PILImage.fromarray(bits).save(tmp_path / "bilevel.png")
    image = pillow_reader().read(tmp_path / "bilevel.png")
    assert image.data.shape == (1, H, W) and image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data[0], bits * np.uint8(255))


def _write_valid(reader: str, path: Path) -> None:
    data = random((64, 64, 3), np.uint8)
    if reader == "tiff":
        tifffile.imwrite(path, data)
    else:
        PILImage.fromarray(data).save(path)


@pytest.mark.parametrize(("reader", "name"), [("tiff", "x.tif"), ("png", "x.png"), ("png", "x.jpg")])
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("garbage", ""),
        ("truncated", ""),
        ("directory", "not a file"),
    ],
)
def test_bad_files_are_one_line_user_errors(
    tmp_path: Path, reader: str, name: str, damage: str, reason: str
) -> None:
    path = tmp_path / name
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"this is not an image" * 10)
    elif damage == "truncated":
        _write_valid(reader, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "directory":
        path.mkdir()
    with pytest.raises(UserError) as info:
        v2d.create("readers", reader).read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read image: {reason}")
    assert "\n" not in message
