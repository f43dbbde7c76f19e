"""Block-wise segmentation of images larger than memory, and the merging of labels across block borders.

The plane is cut into a grid of blocks (cores of ``block`` px); each block is segmented on its core plus
``context`` px around it (its region). Merging, by ownership: a block keeps the objects whose centroid
lies in its core, whole, even where they reach into a neighbour's core; each object is thus segmented in
one piece by one block, and a cell cut by a border (or by the corner of four blocks) keeps one label as
long as it is smaller than the context. Assembling a core pastes its own block's objects first, then the
neighbours' objects on the pixels still free (an object whose pixels there are mostly taken is a second
view of a pasted one and is left out). Labels are numbered 1..N over the whole image (and stack), block
after block.

Memory: one block's region (image, logits, labels) at a time; the results live in a zarr work store on
disk (:class:`WorkStore`), written chunk by chunk, each chunk by one task, so that dask workers never
write the same chunk.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import attrs
import numpy as np

log = logging.getLogger("vista2d")

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


@attrs.frozen
class Grid:
    """Blocks of a ``height`` x ``width`` plane: cores of ``block`` px, regions ``context`` px larger."""

    height: int
    width: int
    block: int
    context: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of blocks."""
        return math.ceil(self.height / self.block), math.ceil(self.width / self.block)

    @property
    def region_shape(self) -> tuple[int, int]:
        """The largest region's (h, w)."""
        return min(self.height, self.block + 2 * self.context), min(self.width, self.block + 2 * self.context)

    def blocks(self) -> list[tuple[int, int]]:
        """Every block's (row, column), in raster order."""
        rows, cols = self.shape
        return [(by, bx) for by in range(rows) for bx in range(cols)]

    def core(self, by: int, bx: int) -> Box:
        """The pixels block (by, bx) owns."""
        y0, x0 = by * self.block, bx * self.block
        return y0, min(y0 + self.block, self.height), x0, min(x0 + self.block, self.width)

    def region(self, by: int, bx: int) -> Box:
        """The pixels block (by, bx) is segmented on: its core and the context around it, in the plane."""
        y0, y1, x0, x1 = self.core(by, bx)
        c = self.context
        return max(y0 - c, 0), min(y1 + c, self.height), max(x0 - c, 0), min(x1 + c, self.width)

    def neighbours(self, by: int, bx: int) -> list[tuple[int, int]]:
        """The blocks around (by, bx) (their regions reach into its core: context < block)."""
        rows, cols = self.shape
        return [
            (y, x)
            for y in range(max(by - 1, 0), min(by + 2, rows))
            for x in range(max(bx - 1, 0), min(bx + 2, cols))
            if (y, x) != (by, bx)
        ]


def owned_objects(labels: np.ndarray, region: Box, core: Box) -> tuple[np.ndarray, int]:
    """``labels`` of ``region`` with only the objects whose centroid lies in ``core`` (both in plane
    coordinates), renumbered 1..n, as uint32; and n."""
    top = int(labels.max(initial=0))
    if top == 0:
        return np.zeros(labels.shape, np.uint32), 0
    h, w = labels.shape
    ids = labels.ravel()
    area = np.bincount(ids, minlength=top + 1)
    cy = np.bincount(ids, np.repeat(np.arange(h, dtype=np.float64), w), top + 1)
    cx = np.bincount(ids, np.tile(np.arange(w, dtype=np.float64), h), top + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = cy / area + region[0], cx / area + region[2]
    keep = (area > 0) & (cy >= core[0]) & (cy < core[1]) & (cx >= core[2]) & (cx < core[3])
    keep[0] = False
    mapping = np.zeros(top + 1, np.uint32)
    mapping[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return mapping[labels], int(keep.sum())


def paste(out: np.ndarray, part: np.ndarray, offset: int, first: bool) -> None:
    """Paste the objects of ``part`` (same shape as ``out``, 0 = none), numbered + ``offset``, into ``out``:
    all of them when ``first``, else each on ``out``'s free pixels when more than half of its pixels there
    are free."""
    ids = part.astype(np.int64)
    if first:
        mask = ids > 0
    else:
        free = out == 0
        top = int(ids.max(initial=0))
        total = np.bincount(ids.ravel(), minlength=top + 1)
        available = np.bincount(ids[free], minlength=top + 1)
        accepted = 2 * available > total
        accepted[0] = False
        mask = free & accepted[ids]
    out[mask] = ids[mask] + offset


@attrs.define
class WorkStore:
    """The zarr store of one image's block-wise run (``<output>/.vista2d/<stem>.zarr``), kept until its
    outputs are written so that a stopped run resumes at the blocks not yet done.

    Arrays (P planes, a grid of rows x cols blocks): ``ranges`` (P, 3, 4) each plane's normalisation
    (NaN until measured); ``blocks`` (P, rows, cols, rh, rw) each block's owned objects on its region;
    ``counts`` (P, rows, cols) their number (-1: not done); ``labels`` (*stack, H, W) the assembled
    labels; ``assembled`` (P, rows, cols) 1 when that core is assembled; ``logits`` (*stack, 3, H, W)
    when kept.
    """

    path: Path
    group: Any

    @classmethod
    def create(
        cls, path: Path, fingerprint: str, stack: tuple[int, ...], grid: Grid, logits: bool, resume: bool
    ) -> WorkStore:
        """Open the store at ``path`` when ``resume`` and it was made for the same ``fingerprint`` (image
        and settings); else start a new one."""
        import zarr

        if resume and path.exists():
            try:
                group = zarr.open_group(path, mode="r+")
            except (OSError, ValueError, KeyError) as exc:  # broken by a crash while it was created
                log.info("%s: starting again (%s)", path, exc)
            else:
                if group.attrs.get("fingerprint") == fingerprint:
                    log.info("resuming %s", path)
                    return cls(path, group)
        shutil.rmtree(path, ignore_errors=True)
        group = zarr.open_group(path, mode="w")
        planes = math.prod(stack)
        rows, cols = grid.shape
        b = grid.block
        group.create_array("ranges", shape=(planes, 3, 4), chunks=(1, 3, 4), dtype="f8", fill_value=np.nan)
        group.create_array("blocks", shape=(planes, rows, cols, *grid.region_shape),
                           chunks=(1, 1, 1, *grid.region_shape), dtype="u4", fill_value=0)
        group.create_array("counts", shape=(planes, rows, cols), chunks=(1, 1, 1), dtype="i8", fill_value=-1)
        group.create_array("assembled", shape=(planes, rows, cols), chunks=(1, 1, 1), dtype="i1", fill_value=0)
        group.create_array("labels", shape=(*stack, grid.height, grid.width),
                           chunks=(*(1,) * len(stack), b, b), dtype="u4", fill_value=0)
        if logits:
            group.create_array("logits", shape=(*stack, 3, grid.height, grid.width),
                               chunks=(*(1,) * len(stack), 3, b, b), dtype="f4", fill_value=0)
        group.attrs["fingerprint"] = fingerprint  # last: a store without it is incomplete
        return cls(path, group)

    @classmethod
    def open(cls, path: Path) -> WorkStore:
        """An existing store, for writing (a worker's view)."""
        import zarr

        return cls(path, zarr.open_group(path, mode="r+"))

    def __getitem__(self, name: str) -> Any:
        return self.group[name]

    def remove(self) -> None:
        """Delete the store (its image's outputs are written)."""
        shutil.rmtree(self.path, ignore_errors=True)
