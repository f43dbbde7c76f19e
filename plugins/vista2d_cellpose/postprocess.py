"""Postprocessors ``cellpose`` (cellpose's ``compute_masks`` as it is) and ``cellpose_fast`` (the same masks from
compiled kernels on the CPU): flows + cell probability -> instance labels by Cellpose dynamics."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import attrs
import numpy as np
from attrs import validators as v

from vista2d_core.interfaces import Postprocessor

from . import dynamics

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


class FastCellposePostprocessor(CellposePostprocessor):
    """Cellpose dynamics with the same options and masks as ``cellpose``, many times faster on the CPU: flows
    followed and the flow-error check's diffusion run by compiled kernels (:mod:`vista2d_cellpose.dynamics`);
    cellpose's own seeding (``get_masks_torch``) and hole filling. On a GPU the check's diffusion runs as dense,
    batched tensor operations instead of cellpose's gathers."""

    def _masks(self, logits: np.ndarray, device: Any) -> np.ndarray:
        import fastremap
        import torch
        from cellpose.dynamics import follow_flows, get_masks_torch
        from cellpose.utils import fill_holes_and_remove_small_masks

        o = self.options
        cell = logits[0] > o.cellprob_threshold
        if not cell.any():
            return np.zeros(cell.shape, np.uint16)
        flows = logits[1:]
        ys, xs = np.nonzero(cell)
        steps = flows * cell / np.float32(5.0)
        if device.type == "cpu":
            final = torch.from_numpy(dynamics.follow_flows(steps, ys, xs, o.niter))
        else:
            final = follow_flows(steps, (ys, xs), niter=o.niter, device=device).int()
        with warnings.catch_warnings():  # cellpose builds a sparse tensor; torch warns about its checks
            warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
            masks = get_masks_torch(final, (ys, xs), cell.shape, max_size_fraction=o.max_size_fraction)
        if masks.max() > 0 and o.flow_threshold > 0:
            errors = self._flow_errors(masks, flows, device)
            fastremap.mask(masks, 1 + np.nonzero(errors > o.flow_threshold)[0], in_place=True)
            fastremap.renumber(masks, in_place=True)
        if o.min_size > 0:
            masks = fill_holes_and_remove_small_masks(masks, min_size=o.min_size)
        return masks

    @staticmethod
    def _flow_errors(masks: np.ndarray, flows: np.ndarray, device: Any) -> np.ndarray:
        if device.type == "cpu":
            return dynamics.flow_errors(masks, flows)
        from .flows import batched_diffusion_flows

        mask_flows = batched_diffusion_flows(masks[None], device)[0].double().cpu().numpy()
        return dynamics.mean_per_label(masks, ((mask_flows - flows / 5.0) ** 2).sum(axis=0))

