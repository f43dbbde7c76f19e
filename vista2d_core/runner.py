"""Run a recipe's stages in order: train -> eval -> infer, each stage using the previous one's model."""

from __future__ import annotations

import logging

import attrs

from .recipe import Recipe, check_stages, write_resolved

log = logging.getLogger("vista2d")


def run(recipe: Recipe) -> int:
    """Run every stage of ``recipe.mode``; return 0, or 1 when some input images failed."""
    from .distributed import is_main_process

    check_stages(recipe)
    if is_main_process():
        write_resolved(recipe, recipe.output_dir)
    status = 0
    for stage in recipe.mode:
        if stage == "train":
            from .train import train

            checkpoint = train(recipe)
            recipe = attrs.evolve(recipe, model=attrs.evolve(recipe.model, checkpoint=checkpoint))
        elif stage == "eval":
            from .evaluate import evaluate

            evaluate(recipe)
        else:
            from .infer import infer

            status = max(status, infer(recipe))
    return status
