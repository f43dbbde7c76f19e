"""Image normalisation, as the reference: channel rules, per-channel [0, 1], percentile scaling.

``normalize(data)``: (C, H, W) or (H, W) array of any dtype -> float32 (3, H, W) in [0, 1]:
optional explicit channel selection; then 1 channel -> repeated to 3, 2 -> (c0, c1, c0),
more than 3 -> the first 3; then each channel min-max scaled to [0, 1] (MONAI ``ScaleIntensity``)
and mapped from its ``percentiles`` (1, 99) to [0, 1], clipped (``ScaleIntensityRangePercentiles``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import UserError


def select_channels(data: np.ndarray, channels: Sequence[int] | None = None) -> np.ndarray:
    """(C, H, W) (or (H, W)) -> (3, H, W) by the reference's channel rules, after picking ``channels``."""
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise UserError(f"expected an image of shape (C, H, W) or (H, W), got {data.shape}")
    if channels:
        bad = [c for c in channels if not -data.shape[0] <= c < data.shape[0]]
        if bad:
            raise UserError(f"data.channels: {bad} out of range for an image with {data.shape[0]} channels")
        data = data[list(channels)]
    if data.shape[0] == 1:
        return np.repeat(data, 3, axis=0)
    if data.shape[0] == 2:
        return np.stack((data[0], data[1], data[0]))
    return data[:3]


def scale_channels(data: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Per channel: min-max to [0, 1], then ``percentiles`` -> [0, 1], clipped. float32 out."""
    out = np.empty(data.shape, np.float32)
    for c, channel in enumerate(data.astype(np.float32)):
        low, high = channel.min(), channel.max()
        channel = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        p_low, p_high = np.percentile(channel, percentiles)
        channel = (channel - p_low) / (p_high - p_low) if p_high > p_low else channel - p_low
        out[c] = np.clip(channel, 0.0, 1.0)
    return out


def normalize(
    data: np.ndarray, channels: Sequence[int] | None = None, percentiles: tuple[float, float] = (1.0, 99.0)
) -> np.ndarray:
    """Reader output -> network input: float32 (3, H, W) in [0, 1] (see the module docstring)."""
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise UserError(f"cannot segment an image of dtype {data.dtype}")
    return scale_channels(select_channels(data, channels), percentiles)
