"""``Segmenter``: one recipe's model, runtime, sliding window and postprocessor, as a callable.

    seg = Segmenter.from_recipe("recipes/quickstart.toml")
    labels = seg(array)          # (H, W) or (C, H, W) array -> (H, W) uint16 labels
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import resolve_device
from .interfaces import Image, Prediction
from .model import build_model
from .preprocess import normalize
from .recipe import Recipe, load_recipe, recipe_from_dict
from .sliding_window import sliding_window

log = logging.getLogger("vista2d")


class Segmenter:
    """Segments images the way ``recipe`` says (``[model]``, ``[data]`` channels/percentiles, ``[infer]``).

    ``model``: an already built network (training passes its own); else built from ``recipe.model``.
    ``tta``: overrides ``infer.tta`` (training validates without it, to keep validation cheap).
    """

    def __init__(
        self, recipe: Recipe, model: torch.nn.Module | None = None, device: Any = None, tta: bool | None = None
    ) -> None:
        self.recipe = recipe
        self.device = resolve_device(recipe.device) if device is None else torch.device(device)
        if model is None:
            if recipe.model.checkpoint is None:
                log.warning("model.checkpoint is not set: segmenting with untrained weights")
            model = build_model(recipe.model)
        self.model = model.to(self.device).eval()
        infer = recipe.infer
        self.runtime = infer.runtime.create()
        self.postprocessor = infer.postprocessor.create()
        example = torch.zeros((infer.sw_batch_size, 3, *infer.roi_size), device=self.device)
        self._predict = self.runtime.prepare(self.model, example, recipe.model.checkpoint)
        if infer.tta if tta is None else tta:
            self._predict = flip_averaged(self._predict)

    @classmethod
    def from_recipe(
        cls, recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, device: Any = None
    ) -> Segmenter:
        """From a Recipe, a TOML path (with ``--set``-style ``overrides``) or a recipe dict."""
        if isinstance(recipe, dict):
            recipe = recipe_from_dict(recipe)
        elif not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe, overrides)
        return cls(recipe, device=device)

    def preprocess(self, data: np.ndarray) -> torch.Tensor:
        """(C, H, W) or (H, W) array -> (1, 3, H, W) float32 tensor in [0, 1] on the device."""
        d = self.recipe.data
        return torch.from_numpy(normalize(np.asarray(data), d.channels, d.percentiles))[None].to(self.device)

    @torch.inference_mode()
    def logits(self, data: np.ndarray) -> torch.Tensor:
        """(C, H, W) or (H, W) array -> (3, H, W) float32 logits [cellprob, dY, dX] on the device."""
        infer = self.recipe.infer
        image = self.preprocess(data)
        return sliding_window(
            image, self._predict, tuple(infer.roi_size), infer.overlap, infer.sw_batch_size, infer.blend
        )[0]

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """(C, H, W) or (H, W) array -> (H, W) uint16 labels (uint32 above 65535 objects)."""
        return self.postprocessor(self.logits(data))

    def predict(self, image: Image, keep_logits: bool = False) -> Prediction:
        """Segment a reader's Image; keep the float32 logits for writers that need them."""
        logits = self.logits(image.data)
        labels = self.postprocessor(logits)
        kept = logits.cpu().numpy() if keep_logits else None
        return Prediction(labels=labels, image=image, logits=kept)


_FLIPS = ((-2,), (-1,), (-2, -1))


def flip_averaged(predict: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Test-time augmentation (cellpose's ``augment``): wrap a tiles (B, 3, h, w) -> logits callable so that
    it returns the mean logits over the tiles and their 3 flips, each flipped back with the sign of its
    flow components corrected (dY for vertical flips, dX for horizontal ones). 4x the model calls."""

    def averaged(tiles: torch.Tensor) -> torch.Tensor:
        total = predict(tiles).float()
        for dims in _FLIPS:
            out = predict(tiles.flip(dims)).float().flip(dims)
            sign = torch.tensor([1.0, -1.0 if -2 in dims else 1.0, -1.0 if -1 in dims else 1.0], device=out.device)
            total += out * sign[:, None, None]
        return total / (1 + len(_FLIPS))

    return averaged
