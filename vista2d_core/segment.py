"""The ``vista2d segment`` shortcut: an infer recipe made from command-line arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import read_checkpoint
from .recipe import Recipe, apply_overrides, read_recipe_data, recipe_from_dict

_DATA_KEYS = ("channels", "percentiles")
_INFER_KEYS = ("roi_size", "overlap", "sw_batch_size", "blend", "tta", "runtime", "postprocessor")


def settings_from_checkpoint(path: Path) -> dict[str, Any]:
    """The recipe tables a vista2d checkpoint was trained with (its ``config`` holds the resolved recipe):
    ``model`` backbone/head, ``data`` channels/percentiles and the ``infer`` settings (window, runtime,
    test-time augmentation, postprocessor); {} for other checkpoints (e.g. the official MONAI one: vit_b
    defaults). The backbone's ``weights`` entry is dropped: the checkpoint itself holds every weight."""
    config = read_checkpoint(path).get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if not (isinstance(model, dict) and isinstance(model.get("backbone"), dict)):
        return {}
    backbone = {k: v for k, v in model["backbone"].items() if k != "weights"}
    data, infer = config.get("data") or {}, config.get("infer") or {}
    return {
        "model": {"backbone": backbone, "head": model.get("head", {"name": "vista2d"})},
        "data": {k: data[k] for k in _DATA_KEYS if k in data},
        "infer": {k: infer[k] for k in _INFER_KEYS if k in infer},
    }


def segment_recipe(
    images: list[str],
    checkpoint: Path,
    output: Path,
    writers: list[str],
    recipe: Path | None = None,
    overrides: list[str] | None = None,
) -> Recipe:
    """An infer recipe for ``images`` with ``checkpoint``, writing ``writers`` into ``output``.

    Model, data and infer settings come from ``recipe`` when given, else from the checkpoint's own config
    (:func:`settings_from_checkpoint`); ``overrides`` (``--set``) apply last.
    Relative paths on the command line are relative to the current folder.
    """
    cwd = Path.cwd()
    data = read_recipe_data(recipe) if recipe else {}
    base = recipe.resolve().parent if recipe else cwd
    if recipe is None:
        data.update(settings_from_checkpoint(checkpoint.resolve()))
    data.setdefault("model", {})["checkpoint"] = str(checkpoint.resolve())
    data["mode"] = "infer"
    data["output_dir"] = str(output.resolve())
    infer = data.setdefault("infer", {})
    infer.update(inputs=[str(cwd / i) for i in images], writers=[w.strip() for w in writers if w.strip()])
    infer["output_subdir"] = ""
    apply_overrides(data, overrides or [])
    return recipe_from_dict(data, base)
