"""Readers: image files -> :class:`~vista2d_core.interfaces.Image` with ``data`` (C, H, W) in the file's dtype.

Every problem with a file (missing, empty, truncated, corrupt, unsupported layout) raises
``UserError("<path>: cannot read image: <reason>")``, never a library exception.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vista2d_core.errors import UserError
from vista2d_core.interfaces import Image, NoOptions, Reader


def _fail(path: Path, reason: str) -> UserError:
    return UserError(f"{path}: cannot read image: {' '.join(reason.split())}")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Check that ``path`` is a non-empty file, then turn any exception of the block into a UserError."""
    if not path.exists():
        raise _fail(path, "no such file")
    if not path.is_file():
        raise _fail(path, "not a file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file")
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # corrupt files make image libraries raise almost anything
        raise _fail(path, f"{type(exc).__name__}: {exc}") from exc


def tiff_layout(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """(C, H, W) from a TIFF array with tifffile ``axes``: singleton axes of >3-D data dropped; 2-D ->
    (1, H, W); 3-D is HWC (transposed) when its last axis is <= 3 or holds a pixel's samples ("S", e.g.
    RGBA), else CHW."""
    if data.ndim > 3:
        axes = "".join(a for a, n in zip(axes, data.shape) if n != 1)
        data = data.reshape([n for n in data.shape if n != 1])
    if data.ndim == 2:
        return data[np.newaxis]
    if data.ndim == 3:
        return np.moveaxis(data, -1, 0) if data.shape[-1] <= 3 or axes.endswith("S") else data
    raise _fail(
        path, f"{data.ndim}-D data of shape {data.shape} (axes {axes}); expected 2-D or 3-D (channels)"
    )


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
    """TIFF images (.tif, .tiff) via tifffile: 2-D, HWC (last axis <= 3, or RGBA) or CHW; keeps pixel size."""

    Options = NoOptions
    suffixes = (".tif", ".tiff")

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def read(self, path: Path) -> Image:
        import tifffile

        path = Path(path)
        with _reading(path), tifffile.TiffFile(path) as tif:
            data = tif.series[0].asarray()
            metadata = _tiff_metadata(tif)
        return Image(tiff_layout(data, metadata["axes"], path), path, metadata)


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
        return Image(np.ascontiguousarray(data), path, metadata)
