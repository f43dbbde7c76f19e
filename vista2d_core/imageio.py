"""Read images and label images through the reader plugins, chosen by file suffix.

``read_image``: a 2-D image as (C, H, W) in memory (training, evaluation, label images);
``open_image``: any image with its axes resolved, its data read on demand where the reader can (inference).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from . import registry
from .axes import read_plane, resolve_axes, stack_axes
from .errors import UserError
from .interfaces import Image, Reader

log = logging.getLogger("vista2d")


@functools.cache
def readers_by_suffix() -> dict[str, Reader]:
    """Lower-case suffix -> reader instance, over every installed reader that loads (first name wins)."""
    table: dict[str, Reader] = {}
    for name in registry.available("readers"):
        try:
            plugin = registry.load("readers", name)
        except UserError as exc:
            log.warning("%s", exc)
            continue
        reader = plugin(plugin.Options())
        for suffix in plugin.suffixes:
            table.setdefault(suffix.lower(), reader)
    return table


def is_image_file(path: Path) -> bool:
    """Whether some installed reader accepts ``path``'s suffix (files, and folders such as ``.zarr``)."""
    return path.suffix.lower() in readers_by_suffix()


def _reader(path: Path) -> Reader:
    reader = readers_by_suffix().get(path.suffix.lower())
    if reader is None:
        known = ", ".join(sorted(readers_by_suffix()))
        raise UserError(f"{path}: no reader for '{path.suffix}' files (readable: {known})")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    return reader


def open_image(path: Path, axes: str | None = None, lazy: bool = True) -> Image:
    """``path`` with its axes resolved (``axes``: the recipe's ``data.axes``, overriding the file's), its
    data read on demand when ``lazy`` and the reader offers ``open``. UserError naming the file when it
    cannot be read or its layout is ambiguous."""
    path = Path(path)
    reader = _reader(path)
    image = reader.open(path) if lazy and callable(getattr(reader, "open", None)) else reader.read(path)
    image.axes = resolve_axes(image.axes, tuple(image.data.shape), axes, str(path))
    return image


def read_image(path: Path, axes: str | None = None) -> Image:
    """A 2-D image read into memory as (C, H, W) (axes "CYX"); UserError naming the file when no reader
    fits or it is a z-stack or time series."""
    image = open_image(path, axes, lazy=False)
    if stack := stack_axes(image.axes, image.data.shape):
        raise UserError(f"{path}: a {stack}YX stack of shape {tuple(image.data.shape)} (axes {image.axes}); "
                        f"training and evaluation take 2-D images (save planes as separate files)")
    data = read_plane(image.data, image.axes)
    return Image(data, image.path, image.metadata, "CYX")


def read_labels(path: Path) -> np.ndarray:
    """A label image as (H, W) int32 (first channel of multi-channel files, as the reference)."""
    data = read_image(path).data[0]
    if not np.issubdtype(data.dtype, np.integer) and np.any(data != np.round(data)):
        raise UserError(f"{path}: a label image must hold whole numbers, got {data.dtype} values")
    if data.min(initial=0) < 0:
        raise UserError(f"{path}: a label image cannot hold negative values")
    return data.astype(np.int32)
