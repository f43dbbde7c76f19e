"""Writers: one :class:`~vista2d_core.interfaces.Prediction` -> files named after the image's stem.

``tiff`` -> ``<stem>_masks.tif``, ``flows`` -> ``<stem>_flows.tif``, ``overlay`` -> ``<stem>_overlay.png``,
``rois`` -> ``<stem>_rois.zip``, ``geojson`` -> ``<stem>.geojson``. Every file is written atomically
(:func:`~vista2d_io.atomic.atomic_path`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from vista2d_core.interfaces import NoOptions, Prediction, Writer

from .atomic import atomic_path
from .contours import outer_contours

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


def smallest_uint(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint8, uint16 or uint32: the smallest unsigned dtype that holds its maximum."""
    top = int(labels.max(initial=0))
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if top <= np.iinfo(t).max)
    return labels.astype(dtype, copy=False)


def write_tiff(
    path: Path,
    data: np.ndarray,
    axes: str,
    compression: str,
    source: dict[str, Any],
    channel_names: list[str] | None = None,
) -> None:
    """Write ``data`` as TIFF; ImageJ hyperstack (axes, ``channel_names``, calibration) when ImageJ
    supports the dtype (uint8, uint16, float32), else plain TIFF. ``source`` is the input image's
    metadata: its ``pixel_size``/``unit`` (from the readers) calibrate the output."""
    import tifffile

    imagej = data.dtype in _IMAGEJ_DTYPES
    metadata: dict[str, Any] = {"axes": axes}
    resolution = None
    if source.get("pixel_size"):
        resolution = (1.0 / source["pixel_size"],) * 2
        # ImageJ metadata is ASCII; ImageJ reads "um" as micrometres.
        unit = str(source.get("unit", "pixel")).replace("\u00b5", "u").replace("\u03bc", "u")
        metadata["unit"] = unit.encode("ascii", "ignore").decode()
    if channel_names:
        metadata["Labels"] = channel_names
    tifffile.imwrite(
        path,
        data,
        imagej=imagej,
        metadata=metadata if imagej else None,
        resolution=resolution,
        compression=None if compression == "none" else compression,
    )


@attrs.define
class TiffOptions:
    """``compression``: "zlib" (deflate; Fiji, napari, QuPath read it), "lzw" or "none"."""

    compression: Literal["zlib", "lzw", "none"] = "zlib"


class LabelTiffWriter(Writer):
    """Label image as compressed TIFF (<stem>_masks.tif), smallest unsigned dtype; for Fiji, napari."""

    Options = TiffOptions

    def __init__(self, options: TiffOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        target = Path(out_dir) / f"{stem}_masks.tif"
        with atomic_path(target) as tmp:
            write_tiff(
                tmp,
                smallest_uint(prediction.labels),
                "YX",
                self.options.compression,
                prediction.image.metadata,
            )
        return [target]


class FlowsWriter(Writer):
    """Raw logits [cellprob, dY, dX] as a 3-channel float32 ImageJ TIFF (<stem>_flows.tif)."""

    Options = TiffOptions
    needs_logits = True

    def __init__(self, options: TiffOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        if prediction.logits is None:
            raise ValueError("the flows writer needs prediction.logits (needs_logits = True)")
        target = Path(out_dir) / f"{stem}_flows.tif"
        with atomic_path(target) as tmp:
            write_tiff(
                tmp,
                np.asarray(prediction.logits, dtype=np.float32),
                "CYX",
                self.options.compression,
                prediction.image.metadata,
                ["cellprob", "dY", "dX"],
            )
        return [target]


def display_rgb(data: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """(H, W, 3) uint8 view of a (C, H, W) image: 1 channel -> grey, 2 -> (c0, c1, c0), >= 3 -> first 3;
    each channel scaled so its ``percentiles`` map to 0 and 255 (min..max when those coincide)."""
    scaled = []
    for channel in data[:3]:
        channel = channel.astype(np.float32)
        low, high = np.percentile(channel, percentiles)
        if high <= low:
            low, high = float(channel.min()), float(channel.max())
        unit = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        scaled.append(np.clip(unit * 255 + 0.5, 0, 255).astype(np.uint8))
    order = {1: (0, 0, 0), 2: (0, 1, 0)}.get(len(scaled), (0, 1, 2))
    return np.stack([scaled[i] for i in order], axis=-1)


def outlines(labels: np.ndarray, width: int) -> np.ndarray:
    """Boolean (H, W): pixels of each object within ``width`` pixels of another label or the background
    (drawn inside the object, so touching objects keep separate outlines; every label included)."""
    import cv2

    # cv2 morphology takes uint8/uint16/float64; float64 holds every uint32 label exactly.
    work = labels if labels.dtype in (np.uint8, np.uint16) else labels.astype(np.float64)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    border = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
    return (labels > 0) & (cv2.erode(work, kernel, **border) != cv2.dilate(work, kernel, **border))


def _color(instance: Any, attribute: attrs.Attribute, value: tuple[int, int, int]) -> None:
    if not all(0 <= v <= 255 for v in value):
        raise ValueError(f"'{attribute.name}' must be 3 integers in 0..255: {list(value)}")


def _percentiles(instance: Any, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if not 0 <= value[0] < value[1] <= 100:
        raise ValueError(f"'{attribute.name}' must be [low, high] with 0 <= low < high <= 100: {list(value)}")


@attrs.define
class OverlayOptions:
    """``color`` of the outlines (RGB 0..255), their ``width`` in pixels, the contrast ``percentiles``."""

    color: tuple[int, int, int] = attrs.field(default=(255, 255, 0), validator=_color)
    width: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    percentiles: tuple[float, float] = attrs.field(default=(1.0, 99.0), validator=_percentiles)


class OverlayWriter(Writer):
    """PNG of the image (8-bit, percentile contrast) with every object's outline (<stem>_overlay.png)."""

    Options = OverlayOptions

    def __init__(self, options: OverlayOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        from PIL import Image as PILImage

        labels, image = prediction.labels, prediction.image.data
        if labels.shape != image.shape[1:]:
            raise ValueError(f"labels {labels.shape} and image {image.shape} (C, H, W) differ in size")
        rgb = display_rgb(image, self.options.percentiles)
        rgb[outlines(labels, self.options.width)] = self.options.color
        target = Path(out_dir) / f"{stem}_overlay.png"
        with atomic_path(target) as tmp:
            PILImage.fromarray(rgb).save(tmp, format="PNG", compress_level=1)
        return [target]


class RoisWriter(Writer):
    """ImageJ/Fiji ROI set (<stem>_rois.zip): one polygon ROI per label, named by its label id."""

    Options = NoOptions

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        import roifile

        rois = []
        for label, points in outer_contours(prediction.labels).items():
            roi = roifile.ImagejRoi.frompoints(points, name=str(label))
            roi.roitype = roifile.ROI_TYPE.POLYGON  # a vertex list (frompoints says freehand)
            rois.append(roi)
        target = Path(out_dir) / f"{stem}_rois.zip"
        with atomic_path(target) as tmp:
            roifile.roiwrite(tmp, rois, mode="w")
        return [target]


@attrs.define
class GeoJsonOptions:
    """``object_type``: QuPath "detection" (light, many) or "annotation" (editable)."""

    object_type: Literal["detection", "annotation"] = "detection"


class GeoJsonWriter(Writer):
    """QuPath GeoJSON (<stem>.geojson): one Polygon feature per label, with its label id."""

    Options = GeoJsonOptions

    def __init__(self, options: GeoJsonOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        features = []
        for label, points in outer_contours(prediction.labels).items():
            ring = np.concatenate([points, points[:1]]).tolist()
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {
                        "objectType": self.options.object_type,
                        "name": str(label),
                        "label": label,
                    },
                }
            )
        target = Path(out_dir) / f"{stem}.geojson"
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        return [target]
