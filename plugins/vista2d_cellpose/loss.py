"""Loss ``cellpose``: cellpose diffusion-flow targets and the reference's flow + cell-probability loss."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v

from vista2d_core.interfaces import Loss

from .flows import diffusion_flows


@attrs.define
class CellposeLossOptions:
    """``flow_scale``: targets' flows are multiplied by it (cellpose: 5); ``flow_weight``, ``cellprob_weight``:
    weights of the flow MSE (reference 0.5) and the cell-probability BCE (reference 1)."""

    flow_scale: float = attrs.field(default=5.0, validator=v.gt(0))
    flow_weight: float = attrs.field(default=0.5, validator=v.ge(0))
    cellprob_weight: float = attrs.field(default=1.0, validator=v.ge(0))


@contextlib.contextmanager
def _one_op_thread() -> Iterator[None]:
    """Run torch ops single-threaded meanwhile. The diffusion is hundreds of small ops: measured twice as
    fast on one thread as on two, and no OpenMP threads spin for a descheduled peer on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class CellposeLoss(Loss):
    """Cellpose flows: 0.5 * MSE(flows, 5 * target flows) + BCE-with-logits(cell probability)."""

    Options = CellposeLossOptions

    def __init__(self, options: CellposeLossOptions) -> None:
        self.options = options

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int labels -> (B, 3, H, W) float32 ``[label > 0, dY, dX]`` on the labels' device."""
        arrays = labels.detach().cpu().numpy()
        with _one_op_thread() if labels.device.type == "cpu" else contextlib.nullcontext():
            flows = diffusion_flows(arrays, labels.device)
        return torch.cat([(labels > 0).float()[:, None], flows], dim=1)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (B, 3, H, W) [cellprob logit, dY, dX] (flows x scale), targets from :meth:`targets` -> scalar."""
        logits = logits.float()
        flow = F.mse_loss(logits[:, 1:], self.options.flow_scale * targets[:, 1:])
        cellprob = F.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0])
        return self.options.flow_weight * flow + self.options.cellprob_weight * cellprob
