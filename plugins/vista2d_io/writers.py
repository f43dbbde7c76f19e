"""Writers: one :class:`~vista2d_core.interfaces.Prediction` -> files named after the image's stem.

``tiff`` -> ``<stem>_masks.tif``, ``flows`` -> ``<stem>_flows.tif``, ``overlay`` -> ``<stem>_overlay.png``,
``rois`` -> ``<stem>_rois.zip``, ``geojson`` -> ``<stem>.geojson``, ``zarr`` -> ``<stem>_masks.ome.zarr``.
Labels and logits may have leading T/Z axes (``Prediction.axes``) and may be zarr arrays larger than
memory: every writer but ``overlay`` then reads them in regions (tiles, bands, blocks), so memory follows
a region, not the image. Every file is written atomically (:mod:`vista2d_core.files`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from vista2d_core.errors import UserError
from vista2d_core.files import atomic_dir, atomic_path
from vista2d_core.interfaces import NoOptions, Prediction, Writer

from .contours import iter_contours
from .ngff import multiscales, unit_symbol
from .regions import blocks

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
TILE = 256  # tile size (and band height) of streamed TIFFs


def label_dtype(labels: Any) -> np.dtype:
    """uint8, uint16 or uint32, the smallest that holds a numpy array's maximum; a zarr array's own dtype
    (its maximum would mean reading it whole)."""
    if not isinstance(labels, np.ndarray):
        return np.dtype(labels.dtype)
    top = int(labels.max(initial=0))
    return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32) if top <= np.iinfo(t).max))


def smallest_uint(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint8, uint16 or uint32: the smallest unsigned dtype that holds its maximum."""
    return labels.astype(label_dtype(labels), copy=False)


def _tiles(data: Any) -> Iterator[np.ndarray]:
    """TILE x TILE tiles of a (..., Y, X) array-like in TIFF order (plane by plane, row-major), edge tiles
    zero-padded, reading one band of TILE rows at a time."""
    for band in blocks(data.shape, TILE, data.shape[-1]):
        rows = np.asarray(data[band])
        rows = np.pad(rows, ((0, TILE - rows.shape[0]), (0, -rows.shape[1] % TILE)))
        for x in range(0, rows.shape[1], TILE):
            yield rows[:, x : x + TILE]


def write_tiff(
    path: Path,
    data: Any,
    axes: str,
    compression: str,
    source: dict[str, Any],
    channel_names: list[str] | None = None,
) -> None:
    """Write ``data``, named by ``axes`` (e.g. "ZYX", "TCYX"), as TIFF: a numpy array as an ImageJ hyperstack
    (axes, ``channel_names``, calibration) when ImageJ supports its dtype (uint8, uint16, float32), else as
    OME-TIFF (axes, channel names, physical size); any other array (zarr, larger than memory) as a tiled
    (TILE x TILE) OME BigTIFF streamed from bands of TILE rows. ``source`` is the input image's metadata:
    its ``pixel_size``/``unit`` (from the readers) calibrate the output."""
    import tifffile

    in_memory = isinstance(data, np.ndarray)
    imagej = in_memory and data.dtype in _IMAGEJ_DTYPES
    metadata: dict[str, Any] = {"axes": axes}
    resolution = None
    if pixel_size := source.get("pixel_size"):
        resolution = (1.0 / pixel_size,) * 2
        unit = unit_symbol(str(source.get("unit", "pixel")))
        if imagej:  # ImageJ metadata is ASCII; ImageJ reads "um" as micrometres.
            metadata["unit"] = unit.replace("\u00b5", "u").encode("ascii", "ignore").decode()
        else:
            metadata.update(PhysicalSizeX=pixel_size, PhysicalSizeY=pixel_size)
            metadata.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    if channel_names and imagej:  # ImageJ labels every plane: the names repeat for each Z and T
        metadata["Labels"] = channel_names * (int(np.prod(data.shape[:-2])) // len(channel_names))
    elif channel_names:
        metadata["Channel"] = {"Name": channel_names}
    streamed = {} if in_memory else {"shape": data.shape, "dtype": data.dtype, "bigtiff": True}
    if not in_memory:  # tifffile compresses this many bytes of tiles at once (default 512 MiB): one band
        streamed["buffersize"] = TILE * data.shape[-1] * np.dtype(data.dtype).itemsize
    tifffile.imwrite(
        path,
        data if in_memory else _tiles(data),
        imagej=imagej,
        ome=not imagej,
        metadata=metadata,
        resolution=resolution,
        photometric="minisblack",
        tile=None if in_memory else (TILE, TILE),
        compression=None if compression == "none" else compression,
        **streamed,
    )


@attrs.define
class TiffOptions:
    """``compression``: "zlib" (deflate; Fiji, napari, QuPath read it), "lzw" or "none"."""

    compression: Literal["zlib", "lzw", "none"] = "zlib"


class LabelTiffWriter(Writer):
    """Label image as compressed TIFF (<stem>_masks.tif) for Fiji, napari: ImageJ hyperstack (uint8/uint16)
    or OME-TIFF (uint32) in the smallest unsigned dtype; zarr labels as a tiled OME BigTIFF, streamed."""

    Options = TiffOptions

    def __init__(self, options: TiffOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        target = Path(out_dir) / f"{stem}_masks.tif"
        with atomic_path(target) as tmp:
            labels = prediction.labels
            write_tiff(
                tmp,
                smallest_uint(labels) if isinstance(labels, np.ndarray) else labels,
                prediction.axes,
                self.options.compression,
                prediction.image.metadata,
            )
        return [target]


class FlowsWriter(Writer):
    """Raw logits [cellprob, dY, dX] as a 3-channel float32 TIFF (<stem>_flows.tif): ImageJ hyperstack
    ("CYX", "ZCYX", ...); zarr logits as a tiled OME BigTIFF, streamed."""

    Options = TiffOptions
    needs_logits = True

    def __init__(self, options: TiffOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        if prediction.logits is None:
            raise ValueError("the flows writer needs prediction.logits (needs_logits = True)")
        target = Path(out_dir) / f"{stem}_flows.tif"
        with atomic_path(target) as tmp:
            logits = prediction.logits
            write_tiff(
                tmp,
                np.asarray(logits, dtype=np.float32) if isinstance(logits, np.ndarray) else logits,
                prediction.axes[:-2] + "CYX",
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


def channels_first(data: Any, axes: str) -> np.ndarray:
    """(C, H, W) of a 2-D image ``data`` named by ``axes`` (file order): Y and X last, every other axis
    (channels, whatever its letter, and singleton ones) merged into C, first."""
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    data = np.asarray(data).transpose(order)
    return data.reshape(-1, *data.shape[-2:])


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
    """PNG of the image (8-bit, percentile contrast) with every object's outline (<stem>_overlay.png); 2-D
    images in memory only (UserError otherwise)."""

    Options = OverlayOptions

    def __init__(self, options: OverlayOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        from PIL import Image as PILImage

        labels, axes = prediction.labels, prediction.axes
        if axes != "YX":
            raise UserError(
                f"overlay: draws 2-D images only; for this {axes} result open {stem}_masks.tif over the image "
                "in napari or Fiji"
            )
        if not isinstance(labels, np.ndarray):
            raise UserError(
                f"overlay: {stem} is too large for a PNG ({' x '.join(map(str, labels.shape))}); "
                "use the zarr writer and napari"
            )
        image = channels_first(prediction.image.data, prediction.image.axes)
        if labels.shape != image.shape[1:]:
            raise ValueError(f"labels {labels.shape} and image {image.shape} (C, H, W) differ in size")
        rgb = display_rgb(image, self.options.percentiles)
        rgb[outlines(labels, self.options.width)] = self.options.color
        target = Path(out_dir) / f"{stem}_overlay.png"
        with atomic_path(target) as tmp:
            PILImage.fromarray(rgb).save(tmp, format="PNG", compress_level=1)
        return [target]


def _objects(prediction: Prediction) -> Iterator[tuple[dict[str, int], int, np.ndarray]]:
    """``(plane, label, contour)`` for every object of every 2-D plane of the labels, streamed (see
    :func:`~vista2d_io.contours.iter_contours`); ``plane`` maps the leading axes ("t", "z") to 0-based
    positions (empty for "YX" labels)."""
    lead = prediction.axes[:-2].lower()
    for index in np.ndindex(*prediction.labels.shape[:-2]):
        plane = dict(zip(lead, map(int, index)))
        for label, points in iter_contours(prediction.labels, index):
            yield plane, label, points


class RoisWriter(Writer):
    """ImageJ/Fiji ROI set (<stem>_rois.zip): one polygon ROI per label (subpixel coordinates), named by its
    label id, or "z<z>-<label>" / "t<t>-z<z>-<label>" with its 1-based plane (also stored as the ROI's
    z/t position, and as its stack position for a single stack axis) for stacks."""

    Options = NoOptions

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        import roifile

        def rois() -> Iterator[roifile.ImagejRoi]:
            for plane, label, points in _objects(prediction):
                roi = roifile.ImagejRoi.frompoints(
                    points,
                    name="-".join([*(f"{axis}{i + 1}" for axis, i in plane.items()), str(label)]),
                    z=plane.get("z"),
                    t=plane.get("t"),
                    position=next(iter(plane.values())) if len(plane) == 1 else None,
                )
                roi.roitype = roifile.ROI_TYPE.POLYGON  # a vertex list (frompoints says freehand)
                yield roi

        target = Path(out_dir) / f"{stem}_rois.zip"
        with atomic_path(target) as tmp:
            roifile.roiwrite(tmp, rois(), mode="w")  # writes each ROI as it comes
        return [target]


@attrs.define
class GeoJsonOptions:
    """``object_type``: QuPath "detection" (light, many) or "annotation" (editable)."""

    object_type: Literal["detection", "annotation"] = "detection"


class GeoJsonWriter(Writer):
    """QuPath GeoJSON (<stem>.geojson): one Polygon feature per label, with its label id and, for stacks,
    its 0-based ``plane`` ({"t": ..., "z": ...}); written feature by feature."""

    Options = GeoJsonOptions

    def __init__(self, options: GeoJsonOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        target = Path(out_dir) / f"{stem}.geojson"
        with atomic_path(target) as tmp, tmp.open("w") as out:
            out.write('{"type": "FeatureCollection", "features": [')
            for n, (plane, label, points) in enumerate(_objects(prediction)):
                ring = np.concatenate([points, points[:1]]).tolist()
                properties = {"objectType": self.options.object_type, "name": str(label), "label": label}
                if plane:
                    properties["plane"] = plane
                feature = {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": properties,
                }
                out.write(("," if n else "") + json.dumps(feature))
            out.write("]}")
        return [target]


@attrs.define
class ZarrOptions:
    """``chunk``: Y/X chunk size of every level; ``levels``: resolution levels, full resolution included
    (0: halve Y and X until both are <= 1024)."""

    chunk: int = attrs.field(default=1024, validator=attrs.validators.ge(16))
    levels: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def _pyramid(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Shapes of the levels: ``shape`` (..., Y, X), then Y and X halved (rounded up) level by level."""
    shapes = [tuple(shape)]
    while len(shapes) < levels if levels else max(shapes[-1][-2:]) > 1024:
        *lead, height, width = shapes[-1]
        shapes.append((*lead, -(-height // 2), -(-width // 2)))
    return shapes


class ZarrWriter(Writer):
    """Labels as an OME-NGFF 0.4 labels image (<stem>_masks.ome.zarr, zarr v2; napari-ome-zarr, ome-zarr-py):
    level "0" the labels in the smallest unsigned dtype (a zarr array's own), levels "1", "2", ... halved
    by nearest neighbour; written chunk by chunk, so memory holds a few chunks whatever the image size."""

    Options = ZarrOptions

    def __init__(self, options: ZarrOptions) -> None:
        self.options = options

    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]:
        import zarr

        labels, axes, chunk = prediction.labels, prediction.axes, self.options.chunk
        shapes = _pyramid(labels.shape, self.options.levels)
        source = prediction.image.metadata
        target = Path(out_dir) / f"{stem}_masks.ome.zarr"
        with atomic_dir(target) as tmp:
            root = zarr.open_group(tmp, mode="w", zarr_format=2)
            previous, dtype = labels, label_dtype(labels)
            for level, shape in enumerate(shapes):
                array = root.create_array(
                    str(level),
                    shape=shape,
                    chunks=(1,) * (len(shape) - 2) + (chunk, chunk),
                    dtype=dtype,
                    fill_value=0,
                    chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF 0.4 requires "/"
                )
                step = 1 if level == 0 else 2
                for *plane, ys, xs in blocks(shape, chunk, chunk):
                    region = (
                        *plane,
                        slice(ys.start * step, ys.stop * step),
                        slice(xs.start * step, xs.stop * step),
                    )
                    array[(*plane, ys, xs)] = np.asarray(previous[region])[..., ::step, ::step]
                previous = array
            root.attrs.update(
                {
                    "multiscales": multiscales(
                        axes, len(shapes), source.get("pixel_size"), source.get("unit"), f"{stem}_masks"
                    ),
                    "image-label": {"version": "0.4"},
                }
            )
        return [target]
