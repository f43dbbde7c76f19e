"""What the stages of one run share, built once by :func:`start_run` before any of them runs.

Order matters and is kept here: the device is chosen and, under torchrun, the process group joined first
(synthetic data is generated on rank 0 while the others wait at a barrier); then the datalists are
resolved and split (when a stage reads their items), the files the stages will read are checked (one UserError listing every problem), and
``resolved_recipe.toml`` is written, once, into the output folder.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import distributed
from .datalist import Datalist, Split, check_files, load_split, resolve_datalists
from .errors import UserError
from .recipe import Recipe, write_resolved


@attrs.define
class RunContext:
    """One run's shared state: ``recipe`` as run (with ``model.diameter`` measured from the training labels
    when training and unset), the ``device`` (a ``torch.device``), the ``datalists`` and their ``split``."""

    recipe: Recipe
    device: Any
    datalists: list[Datalist]
    split: Split


def start_run(recipe: Recipe) -> RunContext:
    """Set up the run of ``recipe`` (see the module docstring) and return its context."""
    device = distributed.setup(recipe.device)  # first: synthetic data generation waits on rank 0
    data = recipe.data
    needs_items = "train" in recipe.mode or "eval" in recipe.mode or not recipe.infer.inputs
    has_items = bool(data.datalists) or data.synthetic is not None
    datalists = resolve_datalists(data) if needs_items and has_items else []
    split = load_split(data, datalists) if datalists else Split([], [], [])
    if "train" in recipe.mode:
        if not split.train:
            raise UserError(f"data: no training items (all items are in validation fold {data.fold}?)")
        measured = check_files(split.train + split.val + split.test, datalists)
        trained_at = recipe.train.augment.diameter  # training resamples every image to this object size
        diameter = trained_at or (measured if recipe.model.diameter is None else None)
        if diameter:  # saved with the model, for infer.diameter and infer.auto_diameter
            recipe = attrs.evolve(recipe, model=attrs.evolve(recipe.model, diameter=round(diameter, 1)))
    if "eval" in recipe.mode:
        if not split.test:
            raise UserError("data.datalists: no testing items to evaluate")
        if "train" not in recipe.mode:
            check_files(split.test, datalists)
    if distributed.is_main_process():
        write_resolved(recipe, recipe.output_dir)
    return RunContext(recipe, device, datalists, split)
