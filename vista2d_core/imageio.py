"""Read images and label images through the reader plugins, chosen by file suffix."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from . import registry
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
    """Whether some installed reader accepts ``path``'s suffix."""
    return path.suffix.lower() in readers_by_suffix()


def read_image(path: Path) -> Image:
    """Read ``path`` with the reader for its suffix; UserError naming the file when none fits."""
    path = Path(path)
    reader = readers_by_suffix().get(path.suffix.lower())
    if reader is None:
        known = ", ".join(sorted(readers_by_suffix()))
        raise UserError(f"{path}: no reader for '{path.suffix}' files (readable: {known})")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return reader.read(path)


def read_labels(path: Path) -> np.ndarray:
    """A label image as (H, W) int32 (first channel of multi-channel files, as the reference)."""
    data = read_image(path).data[0]
    if not np.issubdtype(data.dtype, np.integer) and np.any(data != np.round(data)):
        raise UserError(f"{path}: a label image must hold whole numbers, got {data.dtype} values")
    if data.min(initial=0) < 0:
        raise UserError(f"{path}: a label image cannot hold negative values")
    return data.astype(np.int32)
