"""Readers: image files and OME-Zarr folders -> :class:`~vista2d_core.interfaces.Image`.

TIFF and OME-Zarr data come in file order and dtype with the axes the file names (``Image.axes``; Q for
an axis it does not name); the core drops singleton axes and orders them. ``open`` gives the same image
with lazy zarr data (regions read on demand). Pillow images come as (C, H, W).

Every problem with a file (missing, empty, truncated, corrupt, unsupported layout) raises
``UserError("<path>: cannot read image: <reason>")``, never a library exception.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vista2d_core.errors import UserError
from vista2d_core.interfaces import Image, NoOptions, Reader

from .ngff import level0


def _fail(path: Path, reason: str) -> UserError:
    return UserError(f"{path}: cannot read image: {' '.join(reason.split())}")


@contextlib.contextmanager
def _reading(path: Path, folder: bool = False) -> Iterator[None]:
    """Check that ``path`` is a non-empty file (a folder when ``folder``), then turn any exception of the
    block into a UserError."""
    if not path.exists():
        raise _fail(path, "no such folder" if folder else "no such file")
    if folder and not path.is_dir():
        raise _fail(path, "not a folder")
    if not folder and not path.is_file():
        raise _fail(path, "not a file")
    if not folder and path.stat().st_size == 0:
        raise _fail(path, "empty file")
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # corrupt files make image libraries raise almost anything
        raise _fail(path, f"{type(exc).__name__}: {exc}") from exc


def tiff_axes(axes: str) -> str:
    """Image axes from tifffile's: T, Z, C, Y, X as they are, S (samples, e.g. RGB) -> C unless the file
    also has a C axis, any other letter (I, Q, ...) -> Q."""
    return "".join(a if a in "TZCYX" else "C" if a == "S" and "C" not in axes else "Q" for a in axes)


_OME_SIZE = re.compile(r'PhysicalSizeX="([^"]+)"(?:[^>]*?PhysicalSizeXUnit="([^"]+)")?')


def _tiff_metadata(tif: Any) -> dict[str, Any]:
    """Axes and original shape; ``pixel_size`` and ``unit`` (µm, ...) when ImageJ or OME metadata give them."""
    series = tif.series[0]
    metadata: dict[str, Any] = {"axes": series.axes, "shape": tuple(series.shape)}
    if tif.is_ome and (match := _OME_SIZE.search(tif.ome_metadata or "")):
        metadata.update(pixel_size=float(match[1]), unit=match[2] or "µm")
    elif tif.is_imagej and (unit := (tif.imagej_metadata or {}).get("unit")):
        tag = tif.pages.first.tags.get("XResolution")
        numerator, denominator = tag.value if tag else (0, 1)
        if numerator:
            metadata.update(pixel_size=denominator / numerator, unit=unit)
    return metadata


class TiffReader(Reader):
    """TIFF images (.tif, .tiff, OME-TIFF, ImageJ hyperstacks) via tifffile: the first series, full
    resolution, in file order with its axes; keeps pixel size."""

    Options = NoOptions
    suffixes = (".tif", ".tiff")

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def read(self, path: Path) -> Image:
        import tifffile

        path = Path(path)
        with _reading(path), tifffile.TiffFile(path) as tif:
            data = tif.series[0].asarray(level=0)
            metadata = _tiff_metadata(tif)
        return Image(data, path, metadata, tiff_axes(metadata["axes"]))

    def open(self, path: Path) -> Image:
        """Lazy: a read-only zarr array over the file's level 0, which stays open while the array lives."""
        import tifffile
        import zarr

        path = Path(path)
        with _reading(path), contextlib.ExitStack() as stack:
            tif = stack.enter_context(tifffile.TiffFile(path))
            store = tif.series[0].aszarr(level=0)
            stack.callback(store.close)
            data = zarr.open(store, mode="r")
            metadata = _tiff_metadata(tif)
            weakref.finalize(data, stack.pop_all().close)
        return Image(data, path, metadata, tiff_axes(metadata["axes"]))


# Pillow modes whose pixels are not stored as plain grey or RGB(A) channels -> the mode to convert to.
_PILLOW_CONVERT = {
    "1": "L",
    "LA": "L",
    "La": "L",
    "PA": "RGB",
    "P": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "RGBa": "RGBA",
    "RGBX": "RGB",
}


class PillowReader(Reader):
    """PNG, JPEG, BMP, GIF, WebP images via Pillow: HWC -> CHW; 16-bit grey PNGs stay uint16."""

    Options = NoOptions
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def read(self, path: Path) -> Image:
        """First frame of the file. Palette images become RGB, or grey when the palette is grey; alpha
        of grey images is dropped; RGBA keeps 4 channels. 16-bit colour PNGs arrive as 8-bit RGB
        (a Pillow limitation): store such images as TIFF."""
        from PIL import Image as PILImage

        path = Path(path)
        with _reading(path), PILImage.open(path) as img:
            img.load()
            metadata = {"format": img.format, "mode": img.mode}
            was_palette = img.mode in ("P", "PA")
            if img.mode in _PILLOW_CONVERT:
                img = img.convert(_PILLOW_CONVERT[img.mode])
            data = np.array(img)
        data = data.astype(data.dtype.newbyteorder("="), copy=False)  # "I;16B" is big-endian
        data = data[np.newaxis] if data.ndim == 2 else np.moveaxis(data, -1, 0)
        if was_palette and (data == data[:1]).all():
            data = data[:1]
        return Image(np.ascontiguousarray(data), path, metadata, "CYX")


_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


class OmeZarrReader(Reader):
    """OME-Zarr folders (.zarr; NGFF 0.4 on zarr v2, 0.5 on zarr v3): the first multiscale image's full
    resolution with its axes and pixel size; a plain zarr array as "YX" or Q...YX."""

    Options = NoOptions
    suffixes = (".zarr",)

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def read(self, path: Path) -> Image:
        path = Path(path)
        image = self.open(path)
        with _reading(path, folder=True):
            image.data = np.asarray(image.data)
        return image

    def open(self, path: Path) -> Image:
        import zarr

        path = Path(path)
        with _reading(path, folder=True):
            if not any((path / name).is_file() for name in _ZARR_MARKERS):
                raise _fail(path, f"not a zarr folder (no {', '.join(_ZARR_MARKERS)})")
            node = zarr.open(path, mode="r")
            if isinstance(node, zarr.Array):
                if node.ndim < 2:
                    raise _fail(path, f"a {node.ndim}-D array, not an image")
                return Image(node, path, {"shape": node.shape}, "Q" * (node.ndim - 2) + "YX")
            found = level0(node.attrs)
            if found is None:
                raise _fail(path, "a zarr group without OME-NGFF multiscales metadata")
            level, axes, metadata = found
            data = node[level]
            if data.ndim != len(axes):
                raise _fail(
                    path, f"array {level!r} has {data.ndim} axes, the metadata names {len(axes)} ({axes})"
                )
        return Image(data, path, {**metadata, "shape": data.shape}, axes)
