"""Segment one image file of any size and dimensionality into a :class:`~vista2d_core.interfaces.Prediction`.

Planes of z-stacks and time series one by one; each plane whole (in memory, as for any ordinary image) or,
when a side exceeds ``infer.block_size``, the stack's labels would exceed one block's pixels, or the tasks
run on dask, block by block through a work store on disk (:mod:`vista2d_core.blocks`, :mod:`vista2d_core.tasks`); then ``infer.stitch_threshold`` links labels
across planes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .axes import plane_size, stack_axes, stack_shape
from .blocks import Grid, WorkStore
from .executor import Executor
from .imageio import open_image
from .interfaces import Prediction
from .recipe import Recipe, recipe_to_dict
from .segmenter import AUTO_SCALES, Segmenter, auto_diameter, image_scale, segment_planes
from .stitch import stitch
from .tasks import Job, assemble_core, keep_segmenter, measure_plane, segment_block

# Infer keys that do not change what a model computes for an image (left out of fingerprints).
_RUN_KEYS = ("inputs", "writers", "resume", "dask_workers", "dask_address", "output_subdir")


def settings_key(recipe: Recipe) -> str:
    """A hash of everything that decides an image's labels: model (and its checkpoint file's size and
    time), data and infer settings."""
    data = recipe_to_dict(recipe)
    settings = {"model": data["model"], "data": data["data"],
                "infer": {k: v for k, v in data["infer"].items() if k not in _RUN_KEYS}}
    checkpoint = recipe.model.checkpoint
    if checkpoint is not None and checkpoint.exists():
        settings["checkpoint"] = [checkpoint.stat().st_size, checkpoint.stat().st_mtime_ns]
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_key(path: Path, settings: str) -> str:
    """``settings`` and the file's identity (size and modification time of the file, or folder); just
    ``settings`` for a missing file (reported when it is read)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return settings
    return f"{settings}:{stat.st_size}:{stat.st_mtime_ns}"


def block_context(recipe: Recipe) -> int:
    """``infer.block_overlap``, or by default half the sliding window and at least two object diameters,
    in image pixels (with ``infer.auto_diameter``: at the smallest factor it may resample by)."""
    infer = recipe.infer
    if infer.block_overlap is not None:
        return infer.block_overlap
    scale = AUTO_SCALES[0] if auto_diameter(recipe) else image_scale(recipe)  # auto: the widest context
    diameter = infer.diameter or (recipe.model.diameter or 30.0) / scale
    return math.ceil(max(max(infer.roi_size) / scale / 2, 2 * diameter))


def segment_file(
    path: Path,
    segmenter: Segmenter,
    executor: Executor,
    work: Path,
    keep_logits: bool = False,
) -> tuple[Prediction, int, Callable[[], None]]:
    """Segment ``path`` with ``segmenter``; return the
    prediction, its number of objects and a function that removes its work store (call it once the
    outputs are written).
    ``work``: the work store's path, for block-wise runs."""
    recipe = segmenter.recipe
    infer = recipe.infer
    image = open_image(path, recipe.data.axes)
    shape = tuple(image.data.shape)
    lead, stack = stack_axes(image.axes, shape), stack_shape(image.axes, shape)
    height, width = plane_size(image.axes, shape)
    # block by block (through the work store on disk) when a plane, or the stack's labels, exceed one block
    blockwise = executor.distributed or bool(infer.block_size) and (
        max(height, width) > infer.block_size or math.prod(stack) * height * width > infer.block_size**2
    )
    if not blockwise:
        labels, logits, objects = segment_planes(segmenter, image, keep_logits, executor.progress)
        return Prediction(labels, image, logits, lead + "YX"), objects, lambda: None

    block = infer.block_size or max(height, width)
    grid = Grid(height, width, block, min(block_context(recipe), block - 1))
    settings = settings_key(recipe)
    keep_segmenter(settings, segmenter)
    job = Job(recipe, settings, Path(path), image.axes, stack, grid, work, keep_logits)
    store = WorkStore.create(work, file_key(Path(path), settings), stack, grid, keep_logits, infer.resume)
    name = Path(path).name
    blocks = [(job, p, by, bx) for p in range(job.planes) for by, bx in grid.blocks()]
    executor.run(measure_plane, [(job, p) for p in range(job.planes)], f"{name}: measuring")
    executor.run(segment_block, blocks, f"{name}: blocks")
    counts = store["counts"][:]
    offsets = (np.cumsum(counts.ravel()) - counts.ravel()).reshape(counts.shape)
    objects = int(counts.sum())
    stitching = bool(infer.stitch_threshold and lead)
    if stitching and store.group.attrs.get("stitching"):  # stopped while stitching: assemble again
        store["assembled"][:] = 0
    executor.run(assemble_core, [(*args, offsets) for args in blocks], f"{name}: merging")
    if stitching:
        store.group.attrs["stitching"] = True
        objects = stitch(store["labels"], lead, infer.stitch_threshold)
    logits = store["logits"] if keep_logits else None
    return Prediction(store["labels"], image, logits, lead + "YX"), objects, store.remove
