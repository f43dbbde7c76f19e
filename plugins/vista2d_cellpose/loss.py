"""Loss ``cellpose``: cellpose diffusion-flow targets and the reference's flow + cell-probability loss."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from attrs import validators as v

from vista2d_core.interfaces import Loss


@attrs.define
class CellposeLossOptions:
    """``flow_scale``: targets' flows are multiplied by it (cellpose: 5); ``flow_weight``, ``cellprob_weight``:
    weights of the flow MSE (reference 0.5) and the cell-probability BCE (reference 1)."""

    flow_scale: float = attrs.field(default=5.0, validator=v.gt(0))
    flow_weight: float = attrs.field(default=0.5, validator=v.ge(0))
    cellprob_weight: float = attrs.field(default=1.0, validator=v.ge(0))


def flows(labels: np.ndarray, device: torch.device) -> np.ndarray:
    """(H, W) instance labels -> (2, H, W) float32 unit flows [dY, dX] (cellpose heat diffusion; 0 outside cells)."""
    import fastremap
    from cellpose.dynamics import masks_to_flows_gpu

    renumbered, _ = fastremap.renumber(np.ascontiguousarray(labels), in_place=False)
    if renumbered.max() == 0:
        return np.zeros((2, *labels.shape), np.float32)
    mu, _ = masks_to_flows_gpu(renumbered, device=device)
    return mu.astype(np.float32)


@contextlib.contextmanager
def _one_op_thread() -> Iterator[int]:
    """Yield the number of torch threads, running each torch op single-threaded meanwhile. The diffusion is
    hundreds of small ops per image: images in parallel beat threads inside each op, and single-threaded
    ops avoid OpenMP threads spinning for a descheduled peer on a busy machine (seen: 50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
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
        out = np.empty((arrays.shape[0], 3, *arrays.shape[1:]), np.float32)
        out[:, 0] = arrays > 0
        if labels.device.type == "cpu":
            with _one_op_thread() as threads, ThreadPoolExecutor(min(threads, len(arrays)) or 1) as pool:
                out[:, 1:] = list(pool.map(lambda lab: flows(lab, labels.device), arrays))
        else:
            out[:, 1:] = [flows(lab, labels.device) for lab in arrays]
        return torch.from_numpy(out).to(labels.device)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (B, 3, H, W) [cellprob logit, dY, dX] (flows x scale), targets from :meth:`targets` -> scalar."""
        logits = logits.float()
        flow = F.mse_loss(logits[:, 1:], self.options.flow_scale * targets[:, 1:])
        cellprob = F.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0])
        return self.options.flow_weight * flow + self.options.cellprob_weight * cellprob
