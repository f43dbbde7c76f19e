"""Sliding-window inference with Gaussian blending, window for window the same as MONAI's
``sliding_window_inference`` (scan interval ``int(roi * (1 - overlap))``, the last window flush with
the border, images smaller than the roi padded symmetrically with zeros, Gaussian importance map with
sigma = roi / 8 clamped to >= 1e-3). Memory is bounded by one image's logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis of length ``size`` (>= roi)."""
    if size == roi:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    count = next(i for i in range(math.ceil(size / interval)) if i * interval + roi >= size) + 1
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


@lru_cache(maxsize=8)
def importance_map(roi: tuple[int, int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """(roi_h, roi_w) blending weights: a separable Gaussian (sigma = roi * sigma_scale) or ones."""
    if mode == "constant":
        return torch.ones(roi)
    axes = []
    for n in roi:
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float)
        axes.append(torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2)))
    weights = axes[0][:, None] * axes[1][None, :]
    return weights.clamp(min=max(weights.min().item(), 1e-3))


def sliding_window(
    image: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    roi: tuple[int, int] = (256, 256),
    overlap: float = 0.625,
    batch_size: int = 1,
    mode: str = "gaussian",
) -> torch.Tensor:
    """Apply ``predict`` ((B, C, roi_h, roi_w) -> (B, K, roi_h, roi_w)) over ``image`` (1, C, H, W);
    return the blended float32 (1, K, H, W) on the image's device."""
    h, w = image.shape[-2:]
    pad_h, pad_w = max(roi[0] - h, 0), max(roi[1] - w, 0)
    if pad_h or pad_w:
        image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    H, W = image.shape[-2:]
    starts = [(y, x) for y in window_starts(H, roi[0], overlap) for x in window_starts(W, roi[1], overlap)]
    weights = importance_map(tuple(roi), mode).to(image.device)
    output = count = None
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        windows = torch.cat([image[..., y : y + roi[0], x : x + roi[1]] for y, x in chunk])
        logits = predict(windows).float()
        if output is None:
            output = torch.zeros((1, logits.shape[1], H, W), device=image.device)
            count = torch.zeros((1, 1, H, W), device=image.device)
        for (y, x), window in zip(chunk, logits):
            output[0, :, y : y + roi[0], x : x + roi[1]] += window.to(image.device) * weights
            count[0, :, y : y + roi[0], x : x + roi[1]] += weights
    output /= count
    return output[..., pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]
