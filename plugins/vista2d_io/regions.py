"""Regions of arrays larger than memory: numpy or zarr arrays (..., Y, X) read and written block by block."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def blocks(shape: tuple[int, ...], rows: int, cols: int) -> Iterator[tuple[int | slice, ...]]:
    """Indices covering an array of ``shape`` (..., Y, X): plane by plane (leading indices in C order),
    then ``rows`` x ``cols`` blocks in row-major order, ``(*plane, slice(y0, y1), slice(x0, x1))``, the
    last row and column of blocks clipped to the array."""
    *lead, height, width = shape
    for plane in np.ndindex(*lead):
        for y in range(0, height, rows):
            for x in range(0, width, cols):
                yield (*plane, slice(y, min(y + rows, height)), slice(x, min(x + cols, width)))
