"""The ``vista2d segment`` shortcut: an infer recipe made from command-line arguments."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .options import CommandLineText
from .recipe import Recipe, apply_overrides, read_recipe_data, recipe_from_dict


def segment_recipe(
    images: list[str],
    checkpoint: str | Path,
    output: Path,
    writers: list[str] | None = None,
    recipe: Path | None = None,
    overrides: list[str] | None = None,
) -> Recipe:
    """An infer recipe for ``images`` with ``checkpoint`` (a file or a model name), writing ``writers`` into ``output`` (default: the
    recipe's writers, else tiff).

    Model, data and infer settings come from ``recipe`` when given, laid over the checkpoint's own
    settings (:func:`vista2d_core.recipe.settings_from_checkpoint`); ``overrides`` (``--set``) apply last.
    Relative paths on the command line are relative to the current folder.
    """
    cwd = Path.cwd()
    data = read_recipe_data(recipe) if recipe else {}
    base = recipe.resolve().parent if recipe else cwd
    data.setdefault("model", {})["checkpoint"] = CommandLineText(checkpoint)
    data["mode"] = "infer"
    data["output_dir"] = str(output.resolve())
    infer = data.setdefault("infer", {})
    infer.update(inputs=[str(cwd / i) for i in images], output_subdir="")
    if writers is not None:
        if any(o.partition("=")[0].strip() == "infer.writers" for o in overrides or []):
            raise UserError("writers given twice: use --writers/-w or --set infer.writers, not both")
        infer["writers"] = [w.strip() for w in writers if w.strip()]
    infer.setdefault("writers", ["tiff"])
    apply_overrides(data, overrides or [])
    return recipe_from_dict(data, base)
