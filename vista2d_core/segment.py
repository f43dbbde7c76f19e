"""The ``vista2d segment`` shortcut: an infer recipe made from command-line arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import read_checkpoint
from .recipe import Recipe, apply_overrides, read_recipe_data, recipe_from_dict


def model_table_from_checkpoint(path: Path) -> dict[str, Any] | None:
    """The ``[model]`` backbone/head tables a vista2d checkpoint was trained with (its ``config`` holds
    the resolved recipe), or None for other checkpoints (e.g. the official MONAI one: vit_b defaults).
    The backbone's ``weights`` entry is dropped: the checkpoint itself holds every weight."""
    config = read_checkpoint(path).get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if not (isinstance(model, dict) and isinstance(model.get("backbone"), dict)):
        return None
    backbone = {k: v for k, v in model["backbone"].items() if k != "weights"}
    return {"backbone": backbone, "head": model.get("head", {"name": "vista2d"})}


def segment_recipe(
    images: list[str],
    checkpoint: Path,
    output: Path,
    writers: list[str],
    recipe: Path | None = None,
    overrides: list[str] | None = None,
) -> Recipe:
    """An infer recipe for ``images`` with ``checkpoint``, writing ``writers`` into ``output``.

    Model and infer settings come from ``recipe`` when given, else from the checkpoint's own config.
    Relative paths on the command line are relative to the current folder.
    """
    cwd = Path.cwd()
    data = read_recipe_data(recipe) if recipe else {}
    base = recipe.resolve().parent if recipe else cwd
    model = data.setdefault("model", {})
    if recipe is None:
        model.update(model_table_from_checkpoint(checkpoint.resolve()) or {})
    model["checkpoint"] = str(checkpoint.resolve())
    data["mode"] = "infer"
    data["output_dir"] = str(output.resolve())
    infer = data.setdefault("infer", {})
    infer.update(inputs=[str(cwd / i) for i in images], writers=[w.strip() for w in writers if w.strip()])
    infer["output_subdir"] = ""
    apply_overrides(data, overrides or [])
    return recipe_from_dict(data, base)
