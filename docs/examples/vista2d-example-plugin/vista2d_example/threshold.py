"""Postprocessor ``threshold``: cell-probability logit above a threshold, split into connected components.

It ignores the flows, so touching cells merge; it is a small, dependable example of the
Postprocessor contract in ``vista2d_core.interfaces``, not a replacement for ``cellpose``.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from scipy import ndimage


@attrs.define
class ThresholdOptions:
    """Options of the ``threshold`` postprocessor (recipe: ``infer.postprocessor = {name = "threshold", ...}``)."""

    threshold: float = 0.0
    """Pixels whose cell-probability logit is above this are foreground (0.0 = probability 0.5)."""
    min_size: int = attrs.field(default=15, validator=attrs.validators.ge(0))
    """Objects with fewer pixels than this are removed."""
    connectivity: int = attrs.field(default=1, validator=attrs.validators.in_((1, 2)))
    """1: pixels touching by an edge are connected; 2: by an edge or a corner."""


class ThresholdPostprocessor:
    """Threshold the cell probability, then label connected components (flows unused)."""

    Options = ThresholdOptions

    def __init__(self, options: ThresholdOptions) -> None:
        self.options = options

    def __call__(self, logits: Any) -> np.ndarray:
        """Logits (3, H, W) ``[cellprob logit, dY, dX]`` (tensor or array) -> (H, W) labels 1..N, uint16/uint32."""
        if hasattr(logits, "detach"):  # a torch tensor, without importing torch here
            logits = logits.detach().float().cpu().numpy()
        logits = np.asarray(logits)
        if logits.ndim != 3 or logits.shape[0] != 3:
            raise ValueError(f"threshold: expected logits of shape (3, H, W), got {logits.shape}")
        foreground = logits[0] > self.options.threshold
        structure = ndimage.generate_binary_structure(2, self.options.connectivity)
        labels, count = ndimage.label(foreground, structure=structure)
        if count and self.options.min_size > 1:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            keep = sizes >= self.options.min_size
            keep[0] = False
            renumber = np.zeros(count + 1, dtype=np.int64)
            renumber[keep] = np.arange(1, int(keep.sum()) + 1)
            labels, count = renumber[labels], int(keep.sum())
        return labels.astype(np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32)
