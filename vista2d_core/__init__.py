"""vista2d: train and run VISTA2D-style generalist cell segmentation models.

One obvious function per action::

    import vista2d_core as v2d
    v2d.available("postprocessors")                # names, without importing plugins
    recipe = v2d.load_recipe("recipes/quickstart.toml", ["train.epochs=3"])
    v2d.run(recipe)                                # train / eval / infer, as the recipe's mode says
    seg = v2d.Segmenter.from_checkpoint("runs/quickstart/model.pt")   # with the settings it was trained with
    labels = seg(image)                            # (H, W), (C, H, W) or (H, W, C) array -> uint16 labels

Heavy modules (torch, cellpose) are imported on first use.
"""

from __future__ import annotations

import os
from typing import Any

# Idle OpenMP threads sleep instead of spinning (read when torch loads, so set before it is imported): on a
# CPU shared with other work, spinning threads waiting for a descheduled peer made training steps up to
# 10x slower. Set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .components import create
from .errors import RecipeError, UserError
from .recipe import Recipe, dump_recipe, load_recipe, recipe_from_dict
from .registry import available, describe, load

__all__ = [
    "Recipe",
    "RecipeError",
    "Segmenter",
    "UserError",
    "available",
    "create",
    "describe",
    "dump_recipe",
    "evaluate",
    "load",
    "load_recipe",
    "recipe_from_dict",
    "run",
    "train",
]

_LAZY = {"Segmenter": ".segmenter", "run": ".runner", "train": ".train", "evaluate": ".evaluate"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'vista2d_core' has no attribute {name!r}")
