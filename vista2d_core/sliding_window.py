"""Sliding-window inference with Gaussian blending, window for window the same as MONAI's
``sliding_window_inference`` (scan interval ``int(roi * (1 - overlap))``, the last window flush with
the border, images smaller than the roi padded symmetrically with zeros, Gaussian importance map with
sigma = roi / 8 clamped to >= 1e-3). Memory is bounded by one image's logits.

``mode="cellpose"`` lays the windows out and blends them as cellpose's ``run_net`` (``make_tiles``,
``average_tiles``): the image zero-padded by :func:`cellpose_padding`, ``ceil((1 + 2 overlap) L / roi)``
evenly spaced windows per axis (:func:`cellpose_starts`), weighted by cellpose's taper (:func:`taper_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis of length ``size`` (>= roi)."""
    if size == roi:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    count = next(i for i in range(math.ceil(size / interval)) if i * interval + roi >= size) + 1
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


def cellpose_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Cellpose's tile starts along an axis of padded length ``size`` (its ``tile_overlap`` clamped to
    [0.05, 0.5]): one tile when ``size`` <= ``roi``, else ``ceil((1 + 2 overlap) size / roi)`` evenly spaced."""
    overlap = min(0.5, max(0.05, overlap))
    count = 1 if size <= roi else math.ceil((1.0 + 2 * overlap) * size / roi)
    return np.linspace(0, size - roi, count).astype(int).tolist()


def cellpose_padding(size: int, roi: int, div: int = 16) -> tuple[int, int]:
    """Zeros before and after an axis of length ``size``, as cellpose's ``get_pad_yx`` (``extra`` = 1): 8 px
    each side plus up to a multiple of 16, or up to ``roi`` for shorter axes."""
    fill = int(div * math.ceil(size / div) - size) if size >= roi else max(0, roi - size - div)
    return div // 2 + fill // 2, div // 2 + fill - fill // 2


@lru_cache(maxsize=8)
def taper_mask(roi: tuple[int, int], sig: float = 7.5) -> torch.Tensor:
    """Cellpose's ``_taper_mask``: a product of two logistic edges, about 20 px wide, over the tile."""
    size = max(224, *roi)
    xm = np.abs(np.arange(size) - (size - 1) / 2)
    edge = 1 / (1 + np.exp((xm - (size / 2 - 20)) / sig))
    mask = edge * edge[:, None]
    ly, lx = roi
    mask = mask[size // 2 - ly // 2 : size // 2 + ly // 2 + ly % 2, size // 2 - lx // 2 : size // 2 + lx // 2 + lx % 2]
    return torch.from_numpy(mask.astype(np.float32))


@lru_cache(maxsize=8)
def importance_map(roi: tuple[int, int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """(roi_h, roi_w) blending weights: a separable Gaussian (sigma = roi * sigma_scale), ones, or
    cellpose's taper (``mode="cellpose"``)."""
    if mode == "constant":
        return torch.ones(roi)
    if mode == "cellpose":
        return taper_mask(roi)
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
    if mode == "cellpose":
        (top, bottom), (left, right) = cellpose_padding(h, roi[0]), cellpose_padding(w, roi[1])
    else:
        pad_h, pad_w = max(roi[0] - h, 0), max(roi[1] - w, 0)
        top, bottom, left, right = pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2
    if top or bottom or left or right:
        image = F.pad(image, (left, right, top, bottom))
    H, W = image.shape[-2:]
    axis = cellpose_starts if mode == "cellpose" else window_starts
    starts = [(y, x) for y in axis(H, roi[0], overlap) for x in axis(W, roi[1], overlap)]
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
    return output[..., top : top + h, left : left + w]
