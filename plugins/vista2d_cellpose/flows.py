"""Cellpose's diffusion flows for a whole batch of label images at once.

The same computation as ``cellpose.dynamics.masks_to_flows_gpu`` (heat diffused from each cell's centre
for ``2 * largest cell extent`` iterations, float64, then the normalised gradient), with identical
results. On the CPU each image goes through the compiled per-cell kernel (:mod:`.dynamics`); on a GPU the
batch runs as dense (B, H, W) tensors: one set of tensor operations per iteration for the whole batch
instead of one per image, images that need fewer iterations stopping early, as they would alone.
"""

from __future__ import annotations

import numpy as np
import torch

# A pixel's 9 neighbours (itself first) in cellpose's order: the sum below adds them in the same order.
_OFFSETS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def diffusion_flows(labels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W) integer instance labels (any numbering, 0 = background) -> (B, 2, H, W) float32 unit
    flows [dY, dX] on ``device``, pointing towards each cell's centre; 0 outside cells."""
    if torch.device(device).type != "cpu":
        return batched_diffusion_flows(labels, device)
    import fastremap

    from .dynamics import masks_to_flows

    renumbered = (fastremap.renumber(np.ascontiguousarray(image), in_place=False)[0] for image in labels)
    return torch.from_numpy(np.stack([masks_to_flows(m) for m in renumbered]).astype(np.float32))


def batched_diffusion_flows(labels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`diffusion_flows` as dense tensor operations on the whole batch (for GPUs)."""
    import fastremap
    from cellpose.dynamics import get_centers
    from scipy.ndimage import find_objects

    b, h, w = labels.shape
    masks = np.zeros((b, h, w), np.int64)
    centres: list[np.ndarray] = []
    iterations = np.zeros(b, np.int64)
    for i, image in enumerate(labels):
        masks[i] = fastremap.renumber(np.ascontiguousarray(image), in_place=False)[0]
        if masks[i].max() == 0:
            centres.append(np.zeros((0, 2), np.int64))
            continue
        centre, extent = get_centers(masks[i], find_objects(masks[i]))
        centres.append(centre.astype(np.int64) + 1)  # + 1: the padding below
        iterations[i] = 2 * extent.max()
    out = torch.zeros((b, 2, h, w), dtype=torch.float32, device=device)
    if not iterations.any():
        return out

    # Most iterations first, so that the images still diffusing are always a prefix T[:m].
    order = np.argsort(-iterations, kind="stable")
    padded = torch.nn.functional.pad(torch.from_numpy(masks[order]).to(device), (1, 1, 1, 1))
    hp, wp = h + 2, w + 2

    def shifted(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        return t[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    inside = shifted(padded, 0, 0)
    cells = inside > 0
    same = torch.stack([shifted(padded, dy, dx) == inside for dy, dx in _OFFSETS]).double() * cells
    sources = torch.from_numpy(
        np.concatenate([k * hp * wp + centres[i][:, 0] * wp + centres[i][:, 1] for k, i in enumerate(order)])
    ).to(device)
    source_image = torch.from_numpy(np.repeat(np.arange(b), [len(centres[i]) for i in order])).to(device)
    remaining = iterations[order]
    heat = torch.zeros((b, hp, wp), dtype=torch.float64, device=device)
    for step in range(int(remaining[0])):
        m = int((remaining > step).sum())
        flat = heat.view(-1)
        flat[sources if m == b else sources[source_image < m]] += 1
        active = heat[:m]
        mean = shifted(active, 0, 0) * same[0, :m]
        for j in range(1, 9):
            mean.addcmul_(shifted(active, *_OFFSETS[j]), same[j, :m])
        mean /= 9
        centre = shifted(active, 0, 0)
        centre.copy_(torch.where(cells[:m], mean, centre))
    flows = torch.stack([shifted(heat, 1, 0) - shifted(heat, -1, 0), shifted(heat, 0, 1) - shifted(heat, 0, -1)], 1)
    flows = flows / (1e-60 + flows.square().sum(1, keepdim=True).sqrt()) * cells[:, None]
    out[torch.from_numpy(order).to(device)] = flows.float()
    return out
