"""The tasks of a block-wise run: measure a plane, segment a block, assemble a core.

A :class:`Job` names everything a task needs (picklable: it travels to dask workers); each task opens
the image and the work store itself, reads only its region, and writes only its own chunks. Each process
builds the job's :class:`~vista2d_core.segmenter.Segmenter` once (:func:`segmenter_for`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from .axes import read_plane
from .blocks import Grid, WorkStore, owned_objects, paste
from .interfaces import Image
from .preprocess import channel_ranges, select_channels
from .recipe import Recipe

SAMPLE = 4_000_000  # pixels per channel the percentiles of a block-wise plane are measured on


@attrs.frozen
class Job:
    """One image's block-wise run: its ``recipe``, file (``path``, resolved ``axes``), ``stack`` shape
    (T, Z planes), block ``grid`` and ``work`` store; ``key`` identifies the recipe's model settings."""

    recipe: Recipe
    key: str
    path: Path
    axes: str
    stack: tuple[int, ...]
    grid: Grid
    work: Path
    keep_logits: bool

    def plane(self, p: int) -> tuple[int, ...]:
        """The stack index of flat plane ``p``."""
        return tuple(int(i) for i in np.unravel_index(p, self.stack)) if self.stack else ()

    @property
    def planes(self) -> int:
        return math.prod(self.stack)


_SEGMENTERS: dict[str, Any] = {}
_IMAGES: dict[tuple[Path, str], Image] = {}


def segmenter_for(job: Job) -> Any:
    """This process's Segmenter for the job's recipe (built on first use: once per dask worker)."""
    if job.key not in _SEGMENTERS:
        from .segmenter import Segmenter

        _SEGMENTERS.clear()  # one model per process
        _SEGMENTERS[job.key] = Segmenter(job.recipe)
    return _SEGMENTERS[job.key]


def keep_segmenter(key: str, segmenter: Any) -> None:
    """Use ``segmenter`` (already built in this process) for jobs with ``key``."""
    _SEGMENTERS.clear()
    _SEGMENTERS[key] = segmenter


def _image(job: Job) -> Image:
    key = (job.path, job.axes)
    if key not in _IMAGES:
        from .imageio import open_image

        _IMAGES.clear()
        _IMAGES[key] = open_image(job.path, job.axes)
    return _IMAGES[key]


def measure_plane(job: Job, p: int) -> None:
    """Store plane ``p``'s normalisation ranges: min and max of every pixel, percentiles of a lattice
    sample of at most :data:`SAMPLE` pixels (every pixel for planes up to that size), block by block."""
    store = WorkStore.open(job.work)
    if not np.isnan(store["ranges"][p]).any():
        return
    image, grid, data = _image(job), job.grid, job.recipe.data
    step = max(1, math.ceil(math.sqrt(grid.height * grid.width / SAMPLE)))
    samples, lows, highs = [], [], []
    for by, bx in grid.blocks():
        y0, y1, x0, x1 = grid.core(by, bx)
        block = select_channels(read_plane(image.data, image.axes, job.plane(p), slice(y0, y1), slice(x0, x1)),
                                data.channels, data.normalize).astype(np.float32)
        lows.append(block.min(axis=(1, 2)))
        highs.append(block.max(axis=(1, 2)))
        samples.append(block[:, (-y0) % step :: step, (-x0) % step :: step].reshape(len(block), -1))
    extremes = np.stack([np.min(lows, axis=0), np.max(highs, axis=0)], axis=1)
    ranges = channel_ranges(np.concatenate(samples, axis=1), data.percentiles, extremes, data.normalize)
    store["ranges"][p] = np.asarray(ranges, np.float64)


def segment_block(job: Job, p: int, by: int, bx: int) -> None:
    """Segment block (by, bx) of plane ``p`` on its region; store its owned objects and their number
    (and the logits of its core). Done blocks (a resumed run) are skipped."""
    store = WorkStore.open(job.work)
    if store["counts"][p, by, bx] >= 0:
        return
    image, grid, segmenter = _image(job), job.grid, segmenter_for(job)
    region, core = grid.region(by, bx), grid.core(by, bx)
    ry0, ry1, rx0, rx1 = region
    data = read_plane(image.data, image.axes, job.plane(p), slice(ry0, ry1), slice(rx0, rx1))
    ranges = [tuple(r) for r in store["ranges"][p].astype(np.float32)]
    logits = segmenter.plane_logits(data, ranges)
    owned, count = owned_objects(segmenter.labels(logits), region, core)
    store["blocks"][p, by, bx, : ry1 - ry0, : rx1 - rx0] = owned
    if job.keep_logits:
        y0, y1, x0, x1 = core
        crop = logits[:, y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0].float().cpu().numpy()
        store["logits"][(*job.plane(p), slice(None), slice(y0, y1), slice(x0, x1))] = crop
    store["counts"][p, by, bx] = count  # last: marks the block done


def assemble_core(job: Job, p: int, by: int, bx: int, offsets: np.ndarray) -> None:
    """Write the labels of core (by, bx) of plane ``p``: its block's objects, then its neighbours' on the
    free pixels (see :mod:`vista2d_core.blocks`), numbered + ``offsets`` (P, rows, cols)."""
    store = WorkStore.open(job.work)
    if store["assembled"][p, by, bx]:
        return
    grid = job.grid
    y0, y1, x0, x1 = grid.core(by, bx)
    out = np.zeros((y1 - y0, x1 - x0), np.uint32)
    for i, (ny, nx) in enumerate([(by, bx), *grid.neighbours(by, bx)]):
        ry0, ry1, rx0, rx1 = grid.region(ny, nx)
        top, bottom, left, right = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
        if top >= bottom or left >= right:
            continue
        part = store["blocks"][p, ny, nx, top - ry0 : bottom - ry0, left - rx0 : right - rx0]
        paste(out[top - y0 : bottom - y0, left - x0 : right - x0], part, int(offsets[p, ny, nx]), i == 0)
    store["labels"][(*job.plane(p), slice(y0, y1), slice(x0, x1))] = out
    store["assembled"][p, by, bx] = 1
