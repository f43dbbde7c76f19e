"""Run a recipe's stages in order: train -> eval -> infer, each stage using the previous one's model, all
sharing one :class:`~vista2d_core.context.RunContext` (device, process group, datalists, split).

When eval and infer follow each other and infer segments the testing items (no ``infer.inputs``, no
``infer.resume``), the two run as one pass: each image is segmented once, its outputs written and its
labels scored."""

from __future__ import annotations

import logging

import attrs

from . import distributed
from .context import start_run
from .recipe import Recipe, check_stages

log = logging.getLogger("vista2d")


def run(recipe: Recipe) -> int:
    """Run every stage of ``recipe.mode``; return 0, or 1 when some input images failed. Under torchrun the
    process group is left at the end, whether the stages succeed or raise."""
    check_stages(recipe)
    try:
        return _run_stages(recipe)
    finally:
        distributed.teardown()


def _run_stages(recipe: Recipe) -> int:
    context = start_run(recipe)
    recipe = context.recipe
    status = 0
    fused = scores_infer_outputs(recipe)
    for stage in recipe.mode:
        if stage == "train":
            from .train import train

            checkpoint = train(recipe, context)
            recipe = attrs.evolve(recipe, model=attrs.evolve(recipe.model, checkpoint=checkpoint))
        elif stage == "eval":
            if fused:
                continue  # scored by the infer stage, from the same predictions
            from .evaluate import evaluate

            evaluate(recipe, context)
        else:
            from .evaluate import Scorer
            from .infer import infer

            scorer = Scorer(recipe, context) if fused else None
            status = max(status, infer(recipe, context, scorer))
            if scorer is not None:
                log.info("evaluation: scored from the infer stage's predictions (each image segmented once)")
                scorer.finish()
    return status


def scores_infer_outputs(recipe: Recipe) -> bool:
    """Whether eval and infer run as one pass: adjacent stages, infer on the testing items, not resuming."""
    mode = recipe.mode
    return ("eval" in mode and "infer" in mode and abs(mode.index("eval") - mode.index("infer")) == 1
            and not recipe.infer.inputs and not recipe.infer.resume)
