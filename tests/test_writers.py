"""Writers of vista2d_io (and the shared contour and atomic-write helpers): names, dtypes, round trips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image as PILImage
from vista2d_io.contours import outer_contours
from vista2d_io.writers import GeoJsonWriter, RoisWriter

import vista2d_core as v2d
from vista2d_core.files import atomic_path
from vista2d_core.interfaces import Image, Prediction

H, W = 40, 50


def make_labels() -> np.ndarray:
    """Five objects: two touching squares, a 1-pixel and a 2-pixel object, and the last label (5)
    in the bottom-right corner, touching the image border."""
    labels = np.zeros((H, W), np.uint16)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2
    labels[20, 20] = 3
    labels[25, 30:32] = 4
    labels[30:, 40:] = 5
    return labels


def make_prediction(
    labels: np.ndarray | None = None, channels: int = 1, metadata: dict | None = None
) -> Prediction:
    labels = make_labels() if labels is None else labels
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (channels, *labels.shape)).astype(np.uint16)
    logits = rng.standard_normal((3, *labels.shape)).astype(np.float32)
    return Prediction(labels, Image(data, Path("image.tif"), metadata or {}), logits)


def write(name: str, prediction: Prediction, out_dir: Path, **options) -> list[Path]:
    return v2d.create("writers", name, **options).write(prediction, out_dir, "image")


def test_writers_load_through_the_registry() -> None:
    assert v2d.load("writers", "rois") is RoisWriter
    assert isinstance(v2d.create("writers", "geojson"), GeoJsonWriter)
    assert v2d.load("writers", "flows").needs_logits


FILE_NAMES = [
    ("tiff", "image_masks.tif"),
    ("flows", "image_flows.tif"),
    ("overlay", "image_overlay.png"),
    ("rois", "image_rois.zip"),
    ("geojson", "image.geojson"),
]


@pytest.mark.parametrize(("name", "filename"), FILE_NAMES)
def test_file_names_and_no_temporary_files(tmp_path: Path, name: str, filename: str) -> None:
    out_dir = tmp_path / "out"  # created by the writer
    assert write(name, make_prediction(), out_dir) == [out_dir / filename]
    assert [p.name for p in out_dir.iterdir()] == [filename]


@pytest.mark.parametrize(("name", "filename"), FILE_NAMES)
def test_every_writer_replaces_its_target_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, filename: str
) -> None:
    """The file appears by one rename of a temporary file beside it: until then the old file is intact."""
    target = tmp_path / filename
    target.write_bytes(b"old")
    renames: list[tuple[Path, Path, bytes]] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        renames.append((Path(src), Path(dst), Path(dst).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert write(name, make_prediction(), tmp_path) == [target]
    ((src, dst, before),) = renames
    assert dst == target and src.parent == tmp_path and src.name.startswith(".") and before == b"old"
    assert target.read_bytes() != b"old" and [p.name for p in tmp_path.iterdir()] == [filename]


@pytest.mark.parametrize(
    ("top", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (70000, np.uint32)]
)
def test_label_tiff_smallest_dtype_round_trip(tmp_path: Path, top: int, dtype: type) -> None:
    labels = make_labels().astype(np.uint32)
    labels[labels == 5] = top
    (path,) = write("tiff", make_prediction(labels), tmp_path)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        data = tif.asarray()
    assert data.dtype == dtype
    np.testing.assert_array_equal(data, labels)


def test_label_tiff_compression_option_and_calibration(tmp_path: Path) -> None:
    prediction = make_prediction(metadata={"pixel_size": 0.5, "unit": "µm"})
    (path,) = write("tiff", prediction, tmp_path, compression="lzw")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.LZW
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        numerator, denominator = tif.pages.first.tags["XResolution"].value
    assert denominator / numerator == pytest.approx(0.5)


def test_flows_round_trip_as_imagej_channels(tmp_path: Path) -> None:
    prediction = make_prediction()
    (path,) = write("flows", prediction, tmp_path)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["channels"] == 3
        assert tif.imagej_metadata["Labels"] == ["cellprob", "dY", "dX"]
        data = tif.asarray()
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, prediction.logits)


def test_flows_without_logits_writes_nothing(tmp_path: Path) -> None:
    prediction = make_prediction()
    prediction.logits = None
    with pytest.raises(ValueError, match="logits"):
        write("flows", prediction, tmp_path)
    assert list(tmp_path.iterdir()) == []


def read_overlay(path: Path) -> np.ndarray:
    return np.asarray(PILImage.open(path))


def test_overlay_outlines_every_label_including_the_last(tmp_path: Path) -> None:
    labels = make_labels()
    (path,) = write("overlay", make_prediction(labels), tmp_path, color=[255, 0, 255])
    rgb = read_overlay(path)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    outline = (rgb == [255, 0, 255]).all(axis=-1)
    for label in range(1, 6):  # every object has outline pixels, the last (5) and tiny ones included
        assert outline[labels == label].any(), label
    assert outline[30, 40] and outline[H - 1, W - 1]  # label 5's corners, one at the image border
    assert outline[10, 14] and outline[10, 15]  # the touching objects 1 and 2 keep their own outlines
    assert not outline[10, 10] and not outline[35, 45]  # interiors stay free
    assert not outline[labels == 0].any()


def test_overlay_grey_image_stays_grey_and_width_option(tmp_path: Path) -> None:
    labels = make_labels()
    (path,) = write("overlay", make_prediction(labels), tmp_path, width=3)
    rgb = read_overlay(path)
    outline = (rgb == [255, 255, 0]).all(axis=-1)
    assert outline[32, 45] and not outline[33, 45]  # 3 pixels wide, inside the object
    rest = rgb[~outline]
    assert (rest[:, 0] == rest[:, 1]).all() and (rest[:, 1] == rest[:, 2]).all()
    assert rest.min() == 0 and rest.max() == 255  # percentile contrast stretch


def test_overlay_colour_image(tmp_path: Path) -> None:
    (path,) = write("overlay", make_prediction(channels=2), tmp_path)
    rgb = read_overlay(path)[make_labels() == 0]
    np.testing.assert_array_equal(rgb[:, 0], rgb[:, 2])  # 2 channels shown as (c0, c1, c0)
    assert (rgb[:, 0] != rgb[:, 1]).any()


def test_rois_read_back_one_per_label(tmp_path: Path) -> None:
    (path,) = write("rois", make_prediction(), tmp_path)
    rois = roifile.roiread(path)
    assert [roi.name for roi in rois] == ["1", "2", "3", "4", "5"]
    assert all(len(roi.coordinates()) >= 3 for roi in rois)
    x, y = rois[4].coordinates().mean(axis=0)
    assert (x, y) == pytest.approx((45, 35))


def test_rois_without_objects_give_an_empty_set(tmp_path: Path) -> None:
    (path,) = write("rois", make_prediction(np.zeros((H, W), np.uint16)), tmp_path)
    assert roifile.roiread(path) == []


def test_geojson_one_closed_polygon_per_label(tmp_path: Path) -> None:
    (path,) = write("geojson", make_prediction(), tmp_path)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert [f["properties"]["label"] for f in features] == [1, 2, 3, 4, 5]
    for feature in features:
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["name"] == str(feature["properties"]["label"])
        assert feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) >= 4


def test_geojson_annotation_option(tmp_path: Path) -> None:
    (path,) = write("geojson", make_prediction(), tmp_path, object_type="annotation")
    assert {f["properties"]["objectType"] for f in json.loads(path.read_text())["features"]} == {"annotation"}


def test_contours_enclose_every_pixel_centre_and_tiny_objects_are_polygons() -> None:
    labels = make_labels()
    labels[0, 0] = 7  # ids may have gaps
    contours = outer_contours(labels)
    assert list(contours) == [1, 2, 3, 4, 5, 7]
    for label, points in contours.items():
        assert len(points) >= 4
        polygon = points.astype(np.float32)
        assert cv2.contourArea(polygon) > 0
        ys, xs = np.nonzero(labels == label)
        assert all(cv2.pointPolygonTest(polygon, (x + 0.5, y + 0.5), False) > 0 for x, y in zip(xs, ys))
    np.testing.assert_array_equal(
        np.sort(contours[3], axis=0), [[20.25, 20.25], [20.25, 20.25], [20.75, 20.75], [20.75, 20.75]]
    )


def test_contours_of_many_objects(tmp_path: Path) -> None:
    labels = np.zeros((512, 512), np.uint32)
    labels[2::8, 2::8] = np.arange(1, 64 * 64 + 1).reshape(64, 64)
    labels = cv2.dilate(labels.astype(np.float32), np.ones((3, 3))).astype(np.uint32)
    (path,) = write("rois", make_prediction(labels), tmp_path)
    assert len(roifile.roiread(path)) == 64 * 64


def test_atomic_path_replaces_on_success_and_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt"
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"] and target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"] and target.read_text() == "new"


def test_failing_writer_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", fail)
    with pytest.raises(OSError, match="disk full"):
        write("tiff", make_prediction(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_overlay_with_uint32_labels(tmp_path: Path) -> None:
    labels = make_labels().astype(np.uint32)
    labels[labels == 5] = 70000
    (path,) = write("overlay", make_prediction(labels), tmp_path)
    outline = (read_overlay(path) == [255, 255, 0]).all(axis=-1)
    assert outline[30, 40] and not outline[35, 45]
