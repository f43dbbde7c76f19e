"""Image normalisation, as the reference: channel rules, per-channel [0, 1], percentile scaling.

``normalize(data)``: (C, H, W) or (H, W) array of any dtype -> float32 (3, H, W) in [0, 1]:
optional explicit channel selection; then 1 channel -> repeated to 3, 2 -> (c0, c1, c0),
more than 3 -> the first 3; then each channel min-max scaled to [0, 1] (MONAI ``ScaleIntensity``)
and mapped from its ``percentiles`` (1, 99) to [0, 1], clipped (``ScaleIntensityRangePercentiles``).

``mode="cellpose"`` is cellpose 4's ``normalize_img`` instead: missing channels are zeros (what Cellpose-SAM's
first convolution sees for fewer than 3), and each channel maps its ``percentiles`` to 0 and 1 without
clipping (zeros when the channel is constant or they are less than 1e-3 apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import UserError

_AXES = {"YX": None, "CYX": (0, 1, 2), "YXC": (2, 0, 1)}


def channels_first(data: np.ndarray, axes: str | None = None) -> np.ndarray:
    """An image array -> (C, H, W) (2-D stays (H, W)). ``axes`` names its layout: "YX", "CYX" or "YXC"
    ("S", a pixel's samples, counts as "C"). Without it a 3-D array is "YXC" when its last axis has at most
    4 entries and its first more (RGB(A) as Pillow, imageio and tifffile give it), "CYX" the other way
    round, else ambiguous: a UserError that names the shape and says to pass ``axes``."""
    data = np.asarray(data)
    if axes is not None:
        key = axes.upper().replace("S", "C")
        if key not in _AXES or len(key) != data.ndim:
            raise UserError(f"axes={axes!r} does not fit an array of shape {data.shape} "
                            f"(use one of {', '.join(k for k in _AXES if len(k) == data.ndim) or 'YX, CYX, YXC'})")
        order = _AXES[key]
        return data if order is None else data.transpose(order)
    if data.ndim == 2:
        return data
    if data.ndim == 3:
        first, last = data.shape[0], data.shape[-1]
        if last <= 4 < first:
            return data.transpose(2, 0, 1)
        if first <= 4 < last:
            return data
        raise UserError(f"cannot tell the axes of an array of shape {data.shape}: pass axes=\"CYX\" "
                        f"(channels first) or axes=\"YXC\" (channels last)")
    raise UserError(f"expected one 2-D or 3-D image, got an array of shape {data.shape} "
                    f"(a z-stack or time series: name its axes, e.g. axes=\"ZYX\" or \"TCYX\"; "
                    f"several images: pass a list of arrays)")


def select_channels(data: np.ndarray, channels: Sequence[int] | None = None, mode: str = "vista2d") -> np.ndarray:
    """(C, H, W) (or (H, W)) -> (3, H, W) by the reference's channel rules (``mode="cellpose"``: missing
    channels zero), after picking ``channels``."""
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise UserError(f"expected an image of shape (C, H, W) or (H, W), got {data.shape}")
    if channels:
        bad = [c for c in channels if not -data.shape[0] <= c < data.shape[0]]
        if bad:
            raise UserError(f"data.channels: {bad} out of range for an image with {data.shape[0]} channels")
        data = data[list(channels)]
    if mode == "cellpose" and data.shape[0] < 3:
        return np.concatenate((data, np.zeros((3 - data.shape[0], *data.shape[1:]), data.dtype)))
    if data.shape[0] == 1:
        return np.repeat(data, 3, axis=0)
    if data.shape[0] == 2:
        return np.stack((data[0], data[1], data[0]))
    return data[:3]


def channel_ranges(
    data: np.ndarray,
    percentiles: tuple[float, float] = (1.0, 99.0),
    extremes: np.ndarray | None = None,
    mode: str = "vista2d",
) -> list[tuple[float, float, float, float]]:
    """Per channel of (C, ...) ``data``: (min, max, low, high) with low/high its ``percentiles`` after
    min-max scaling to [0, 1] (``mode="cellpose"``: of the values themselves, as cellpose's ``normalize99``,
    on a lattice of at most about 224 x 224 pixels for planes above 224**3 pixels). ``extremes`` (C, 2) gives
    each channel's min and max when ``data`` is a sample of a larger image (block-wise segmentation:
    percentiles of a sample, extremes of every pixel)."""
    ranges = []
    for c, channel in enumerate(data.astype(np.float32)):
        low, high = (channel.min(), channel.max()) if extremes is None else np.float32(extremes[c])
        if mode == "cellpose":
            if channel.ndim == 2 and channel.size > 224**3:
                channel = channel[:: max(1, channel.shape[0] // 224), :: max(1, channel.shape[1] // 224)]
            ranges.append((low, high, np.percentile(channel, percentiles[0]), np.percentile(channel, percentiles[1])))
            continue
        unit = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        ranges.append((low, high, *np.percentile(unit, percentiles)))
    return ranges


def scale_channels(
    data: np.ndarray,
    percentiles: tuple[float, float] = (1.0, 99.0),
    ranges: list[tuple[float, float, float, float]] | None = None,
    mode: str = "vista2d",
) -> np.ndarray:
    """Per channel: min-max to [0, 1], then ``percentiles`` -> [0, 1], clipped (``mode="cellpose"``: see the
    module docstring). float32 out. ``ranges`` (from :func:`channel_ranges`, e.g. of the whole image when
    ``data`` is a block of it) replaces the channel's own min, max and percentiles."""
    ranges = channel_ranges(data, percentiles, mode=mode) if ranges is None else ranges
    out = np.empty(data.shape, np.float32)
    for c, channel in enumerate(data.astype(np.float32)):
        low, high, p_low, p_high = ranges[c]
        if mode == "cellpose":
            scaled = high > low and p_high - p_low > 1e-3
            out[c] = channel if scaled else 0.0
            if scaled:  # cellpose's in-place arithmetic, rounded as it rounds
                out[c] -= p_low
                out[c] /= p_high - p_low
            continue
        channel = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        channel = (channel - p_low) / (p_high - p_low) if p_high > p_low else channel - p_low
        out[c] = np.clip(channel, 0.0, 1.0)
    return out


def normalize(
    data: np.ndarray,
    channels: Sequence[int] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    ranges: list[tuple[float, float, float, float]] | None = None,
    mode: str = "vista2d",
) -> np.ndarray:
    """Reader output -> network input: float32 (3, H, W) (see the module docstring for both ``mode``s);
    ``ranges`` as :func:`scale_channels`."""
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise UserError(f"cannot segment an image of dtype {data.dtype}")
    return scale_channels(select_channels(data, channels, mode), percentiles, ranges, mode)
