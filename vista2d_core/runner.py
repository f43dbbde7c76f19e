"""Run a recipe's stages in order: train -> eval -> infer, each stage using the previous one's model, all
sharing one :class:`~vista2d_core.context.RunContext` (device, process group, datalists, split)."""

from __future__ import annotations

import logging

import attrs

from .context import start_run
from .recipe import Recipe, check_stages

log = logging.getLogger("vista2d")


def run(recipe: Recipe) -> int:
    """Run every stage of ``recipe.mode``; return 0, or 1 when some input images failed."""
    check_stages(recipe)
    context = start_run(recipe)
    recipe = context.recipe
    status = 0
    for stage in recipe.mode:
        if stage == "train":
            from .train import train

            checkpoint = train(recipe, context)
            recipe = attrs.evolve(recipe, model=attrs.evolve(recipe.model, checkpoint=checkpoint))
        elif stage == "eval":
            from .evaluate import evaluate

            evaluate(recipe, context)
        else:
            from .infer import infer

            status = max(status, infer(recipe, context))
    return status
