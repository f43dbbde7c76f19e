"""Postprocessor ``cellpose``: flows + cell probability -> instance labels by Cellpose dynamics."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import attrs
import numpy as np
from attrs import validators as v

from vista2d_core.interfaces import Postprocessor

log = logging.getLogger("vista2d")


@attrs.define
class CellposeOptions:
    """``cellpose.dynamics.compute_masks`` settings (reference defaults).

    ``cellprob_threshold`` applies to the logit; ``flow_threshold`` = 0 skips the flow-error check
    (much faster on CPU); ``device`` "auto" runs where the logits are, falling back to the CPU.
    """

    niter: int = attrs.field(default=200, validator=v.ge(1))
    cellprob_threshold: float = 0.4
    flow_threshold: float = attrs.field(default=0.4, validator=v.ge(0.0))
    min_size: int = 15
    max_size_fraction: float = attrs.field(default=0.4, validator=[v.gt(0.0), v.le(1.0)])
    device: str = "auto"


class CellposePostprocessor(Postprocessor):
    """Cellpose dynamics (follow flows, cluster, flow-error check); uint16/uint32 labels."""

    Options = CellposeOptions

    def __init__(self, options: CellposeOptions) -> None:
        self.options = options

    def __call__(self, logits: Any) -> np.ndarray:
        import torch

        device = torch.device("cpu")
        if isinstance(logits, torch.Tensor):
            if self.options.device == "auto":
                device = logits.device
            logits = logits.detach().float().cpu().numpy()
        if self.options.device != "auto":
            device = torch.device(self.options.device)
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 3 or logits.shape[0] != 3:
            raise ValueError(f"cellpose postprocessor: expected logits (3, H, W), got {logits.shape}")
        try:
            labels = self._masks(logits, device)
        except RuntimeError as exc:
            if device.type == "cpu":
                raise
            log.warning("cellpose dynamics failed on %s (%s); retrying on the CPU", device, exc)
            labels = self._masks(logits, torch.device("cpu"))
        dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
        return labels.astype(dtype, copy=False)

    def _masks(self, logits: np.ndarray, device: Any) -> np.ndarray:
        from cellpose.dynamics import compute_masks

        o = self.options
        with warnings.catch_warnings():  # cellpose builds a sparse tensor; torch warns about its checks
            warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
            return compute_masks(
                logits[1:],
                logits[0],
                niter=o.niter,
                cellprob_threshold=o.cellprob_threshold,
                flow_threshold=o.flow_threshold,
                min_size=o.min_size,
                max_size_fraction=o.max_size_fraction,
                device=device,
            )
