"""vista2d_io for real data: named axes (TIFF, OME-TIFF pyramids, OME-Zarr), lazy reads, and writers for
stacks and for zarr labels larger than memory (OME-Zarr, tiled BigTIFF, streamed ROIs and GeoJSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import roifile
import tifffile
import zarr
from PIL import Image as PILImage
from vista2d_io import contours
from vista2d_io.contours import outer_contours

import vista2d_core as v2d
from vista2d_core.errors import UserError
from vista2d_core.interfaces import Image, Prediction

RNG = np.random.default_rng(0)


class Recorder:
    """A zarr array that records the largest region read (in pixels) and, with ``fail_after``, raises on
    later reads (a disk failing midway)."""

    def __init__(self, array: Any, fail_after: int | None = None) -> None:
        self.array, self.fail_after = array, fail_after
        self.reads, self.largest = 0, 0
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, index: Any) -> np.ndarray:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise OSError("disk gone")
        region = np.asarray(self.array[index])
        self.largest = max(self.largest, region.size)
        return region


def as_zarr(data: np.ndarray, chunks: tuple[int, ...] | None = None) -> zarr.Array:
    """``data`` as an in-memory zarr array (chunks of 1 plane x 64 x 64 by default)."""
    chunks = chunks or (1,) * (data.ndim - 2) + (64, 64)
    array = zarr.create_array(zarr.storage.MemoryStore(), shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[...] = data
    return array


def cells(shape: tuple[int, ...], spacing: int = 12, dtype: type = np.uint32) -> np.ndarray:
    """Labels (..., H, W): square objects of 2..9 pixels on a grid, numbered 1..N across all planes, some
    touching, many crossing 32-pixel block boundaries."""
    labels = np.zeros(shape, dtype)
    label = 0
    for index in np.ndindex(*shape[:-2]):
        for y in range(1, shape[-2] - 10, spacing):
            for x in range(1, shape[-1] - 10, spacing):
                label += 1
                size = 2 + (label * 7) % 8
                labels[(*index, slice(y, y + size), slice(x, x + size + 2))] = label
    return labels


def prediction(labels: Any, axes: str, logits: Any = None, **metadata: Any) -> Prediction:
    image = Image(np.zeros(labels.shape[-2:], np.uint8), Path("image.tif"), metadata, "YX")
    return Prediction(labels, image, logits, axes)


def write(name: str, pred: Prediction, out_dir: Path, **options: Any) -> list[Path]:
    return v2d.create("writers", name, **options).write(pred, out_dir, "image")


# Readers


def test_imagej_zyx_read_and_open(tmp_path: Path) -> None:
    data = RNG.integers(0, 4000, (3, 40, 50)).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    reader = v2d.create("readers", "tiff")
    image = reader.read(path)
    assert image.axes == "ZYX" and isinstance(image.data, np.ndarray)
    np.testing.assert_array_equal(image.data, data)
    lazy = reader.open(path)
    assert lazy.axes == "ZYX" and not isinstance(lazy.data, np.ndarray)
    assert lazy.data.shape == data.shape and lazy.data.dtype == data.dtype
    np.testing.assert_array_equal(lazy.data[2, 10:20, 5:45], data[2, 10:20, 5:45])


def test_unnamed_axes_are_q_and_samples_are_channels(tmp_path: Path) -> None:
    reader = v2d.create("readers", "tiff")
    tifffile.imwrite(
        tmp_path / "q.tif", np.zeros((4, 12, 16), np.uint8), photometric="minisblack", metadata=None
    )
    assert reader.read(tmp_path / "q.tif").axes == "QYX"  # tifffile says "IYX"
    assert reader.open(tmp_path / "q.tif").axes == "QYX"
    rgb = RNG.integers(0, 255, (12, 16, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    for image in (reader.read(tmp_path / "rgb.tif"), reader.open(tmp_path / "rgb.tif")):
        assert image.axes == "YXC"
        np.testing.assert_array_equal(image.data[...], rgb)


def test_ome_tiff_pyramid_gives_level_0(tmp_path: Path) -> None:
    data = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, subifds=1, metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm"})
        tif.write(data[::2, ::2], subfiletype=1)
    reader = v2d.create("readers", "tiff")
    for image in (reader.read(path), reader.open(path)):
        assert image.axes == "YX" and image.data.shape == (64, 80)
        assert image.metadata["pixel_size"] == pytest.approx(0.5) and image.metadata["unit"] == "µm"
        np.testing.assert_array_equal(image.data[...], data)


def ngff_axes(axes: str) -> list[dict]:
    kinds = {"t": "time", "c": "channel"}
    return [
        {"name": a, "type": kinds.get(a, "space"), **({"unit": "micrometer"} if a in "yx" else {})}
        for a in axes
    ]


def write_ome_zarr(path: Path, data: np.ndarray, axes: str, version: str) -> None:
    """A 2-level OME-Zarr image written with zarr directly: NGFF 0.4 (zarr v2) or 0.5 (zarr v3)."""
    root = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    scales = [[0.25 * 2**level if a in "yx" else 1.0 for a in axes] for level in range(2)]
    for level in range(2):
        step = 2**level
        root.create_array(
            str(level), data=data[..., ::step, ::step], chunks=(1,) * (data.ndim - 2) + (16, 16)
        )
    image = {
        "version": version,
        "axes": ngff_axes(axes),
        "datasets": [
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scales[level]}]}
            for level in range(2)
        ],
    }
    if version == "0.4":
        root.attrs["multiscales"] = [image]
    else:
        del image["version"]
        root.attrs["ome"] = {"version": "0.5", "multiscales": [image]}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_read_and_open(tmp_path: Path, version: str) -> None:
    data = RNG.integers(0, 4000, (2, 3, 40, 50)).astype(np.uint16)
    path = tmp_path / "image.zarr"
    write_ome_zarr(path, data, "czyx", version)
    reader = v2d.create("readers", "zarr")
    assert ".zarr" in reader.suffixes
    image = reader.read(path)
    assert image.axes == "CZYX" and isinstance(image.data, np.ndarray)
    assert image.metadata["pixel_size"] == pytest.approx(0.25) and image.metadata["unit"] == "µm"
    np.testing.assert_array_equal(image.data, data)
    lazy = reader.open(path)
    assert lazy.axes == "CZYX" and isinstance(lazy.data, zarr.Array) and lazy.data.shape == data.shape
    np.testing.assert_array_equal(lazy.data[1, 2, 5:9], data[1, 2, 5:9])


def test_plain_zarr_array_has_unnamed_leading_axes(tmp_path: Path) -> None:
    data = RNG.integers(0, 255, (3, 20, 30)).astype(np.uint8)
    zarr.create_array(tmp_path / "plain.zarr", data=data)
    image = v2d.create("readers", "zarr").read(tmp_path / "plain.zarr")
    assert image.axes == "QYX" and image.metadata == {"shape": (3, 20, 30)}
    np.testing.assert_array_equal(image.data, data)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("missing", "no such folder"),
        ("file", "not a folder"),
        ("empty", "not a zarr folder"),
        ("no multiscales", "a zarr group without OME-NGFF multiscales metadata"),
        ("broken json", ""),
        ("missing level", ""),
    ],
)
def test_bad_ome_zarr_is_a_one_line_user_error(tmp_path: Path, damage: str, reason: str) -> None:
    path = tmp_path / "bad.zarr"
    if damage == "file":
        path.write_bytes(b"zarr")
    elif damage == "empty":
        path.mkdir()
    elif damage == "no multiscales":
        zarr.open_group(path, mode="w").create_array("0", shape=(4, 4), dtype="uint8")
    elif damage == "broken json":
        path.mkdir()
        (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": ')
    elif damage == "missing level":
        write_ome_zarr(path, np.zeros((8, 8), np.uint8), "yx", "0.5")
        root = zarr.open_group(path, mode="a")
        root.attrs["ome"] = {
            **root.attrs["ome"],
            "multiscales": [{"axes": ngff_axes("yx"), "datasets": [{"path": "9"}]}],
        }
    for method in ("read", "open"):
        with pytest.raises(UserError) as info:
            getattr(v2d.create("readers", "zarr"), method)(path)
        message = str(info.value)
        assert message.startswith(f"{path}: cannot read image: {reason}") and "\n" not in message


# Writers: OME-Zarr


@pytest.mark.parametrize("source", ["numpy", "zarr"])
def test_zarr_writer_round_trip_with_levels(tmp_path: Path, source: str) -> None:
    labels = cells((2, 70, 90))
    data = labels if source == "numpy" else Recorder(as_zarr(labels))
    (path,) = write("zarr", prediction(data, "ZYX", pixel_size=0.5, unit="um"), tmp_path, chunk=16, levels=3)
    assert path == tmp_path / "image_masks.ome.zarr" and [p.name for p in tmp_path.iterdir()] == [path.name]
    image = v2d.create("readers", "zarr").read(path)
    assert image.axes == "ZYX" and image.metadata["pixel_size"] == 0.5 and image.metadata["unit"] == "µm"
    np.testing.assert_array_equal(image.data, labels)
    assert image.data.dtype == (np.uint8 if source == "numpy" else np.uint32)  # numpy: smallest dtype
    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == 2 and root.attrs["image-label"] == {"version": "0.4"}
    (multiscale,) = root.attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [a["type"] for a in multiscale["axes"]] == ["space"] * 3
    assert [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]] == [
        [1.0, 0.5, 0.5],
        [1.0, 1.0, 1.0],
        [1.0, 2.0, 2.0],
    ]
    np.testing.assert_array_equal(root["1"][...], labels[..., ::2, ::2])
    np.testing.assert_array_equal(root["2"][...], labels[..., ::4, ::4])
    assert root["0"].chunks == (1, 16, 16)
    assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    if source == "zarr":  # chunk by chunk: never the whole image, nor a whole plane
        assert 0 < data.largest <= 16 * 16


def test_zarr_writer_automatic_levels_and_time_axis(tmp_path: Path) -> None:
    labels = np.zeros((2, 2100, 20), np.uint16)
    labels[1, 2000:2010, 5:9] = 7
    (path,) = write("zarr", prediction(labels, "TYX"), tmp_path)
    root = zarr.open_group(path, mode="r")
    assert [root[str(level)].shape for level in range(3)] == [(2, 2100, 20), (2, 1050, 10), (2, 525, 5)]
    assert "3" not in root
    assert [a["type"] for a in root.attrs["multiscales"][0]["axes"]] == ["time", "space", "space"]


def test_zarr_writer_replaces_an_existing_folder(tmp_path: Path) -> None:
    old = tmp_path / "image_masks.ome.zarr"
    old.mkdir()
    (old / "stale").write_text("old")
    labels = cells((40, 40))
    (path,) = write("zarr", prediction(labels, "YX"), tmp_path)
    assert not (path / "stale").exists() and [p.name for p in tmp_path.iterdir()] == [path.name]
    np.testing.assert_array_equal(v2d.create("readers", "zarr").read(path).data, labels)


@pytest.mark.parametrize("name", ["zarr", "tiff", "flows", "rois", "geojson"])
def test_writer_failing_midway_leaves_nothing(tmp_path: Path, name: str) -> None:
    """Zarr labels (or logits) whose third read fails: no temporary file or folder, no target."""
    labels = cells((2, 300, 300))
    failing = Recorder(as_zarr(labels), fail_after=2)
    logits = failing if name == "flows" else None
    pred = prediction(labels if name == "flows" else failing, "ZYX", logits)
    with pytest.raises(OSError, match="disk gone"):
        write(name, pred, tmp_path / "out", **({"chunk": 64} if name == "zarr" else {}))
    assert failing.reads == 3
    assert list((tmp_path / "out").iterdir()) == []


# Writers: TIFF


def test_tiled_bigtiff_from_zarr_labels(tmp_path: Path) -> None:
    labels = cells((2, 300, 530))
    data = Recorder(as_zarr(labels))
    (path,) = write("tiff", prediction(data, "ZYX", pixel_size=0.25, unit="µm"), tmp_path)
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome and tif.series[0].axes == "ZYX"
        page = tif.pages.first
        assert (
            page.is_tiled
            and (page.tilelength, page.tilewidth) == (256, 256)
            and len(page.dataoffsets) == 2 * 3
        )
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert 0 < data.largest <= 256 * 530  # one band of rows at a time
    image = v2d.create("readers", "tiff").read(path)
    assert image.axes == "ZYX" and image.metadata["pixel_size"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("shape", "axes", "top", "kind"),
    [
        ((3, 20, 30), "ZYX", 300, "imagej"),
        ((2, 3, 20, 30), "TZYX", 70000, "ome"),
        ((2, 20, 30), "TYX", 9, "imagej"),
    ],
)
def test_label_tiff_keeps_leading_axes(tmp_path: Path, shape: tuple, axes: str, top: int, kind: str) -> None:
    labels = cells(shape)
    labels[labels == labels.max()] = top
    (path,) = write("tiff", prediction(labels, axes), tmp_path)
    image = v2d.create("readers", "tiff").read(path)
    with tifffile.TiffFile(path) as tif:
        assert getattr(tif, f"is_{kind}")
    assert image.axes == axes
    np.testing.assert_array_equal(image.data, labels)


@pytest.mark.parametrize("source", ["numpy", "zarr"])
def test_flows_with_leading_axes(tmp_path: Path, source: str) -> None:
    logits = RNG.standard_normal((2, 3, 40, 60)).astype(np.float32)
    data = logits if source == "numpy" else as_zarr(logits, (1, 1, 64, 64))
    (path,) = write("flows", prediction(np.zeros((2, 40, 60), np.uint16), "ZYX", data), tmp_path)
    image = v2d.create("readers", "tiff").read(path)
    assert image.axes == "ZCYX" and image.data.dtype == np.float32
    np.testing.assert_array_equal(image.data, logits)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled == (source == "zarr")


# Writers: overlay


def test_overlay_refuses_stacks_and_zarr_labels_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"^overlay: draws 2-D images only; for this ZYX result open image_masks"
    ):
        write("overlay", prediction(cells((2, 40, 40)), "ZYX"), tmp_path)
    with pytest.raises(
        UserError, match=r"^overlay: image is too large for a PNG \(40 x 50\); use the zarr writer"
    ):
        write("overlay", prediction(as_zarr(cells((40, 50))), "YX"), tmp_path)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_overlay_draws_an_image_in_file_order(tmp_path: Path) -> None:
    """A (H, W, C) image named "YXC" gives the same overlay as its (C, H, W) "CYX" version."""
    labels = cells((40, 50))
    chw = RNG.integers(0, 4000, (2, 40, 50)).astype(np.uint16)
    pngs = []
    for data, axes in ((chw, "CYX"), (chw.transpose(1, 2, 0), "YXC")):
        pred = Prediction(labels, Image(data, Path("image.tif"), {}, axes))
        (path,) = write("overlay", pred, tmp_path / axes)
        pngs.append(np.asarray(PILImage.open(path)))
    np.testing.assert_array_equal(pngs[0], pngs[1])
    assert (pngs[0] == [255, 255, 0]).all(axis=-1).any()


# Writers: ROIs and GeoJSON


def read_rois(path: Path) -> list[tuple[str, int, int, int, np.ndarray]]:
    return [(r.name, r.position, r.z_position, r.t_position, r.coordinates()) for r in roifile.roiread(path)]


def test_rois_and_geojson_from_zarr_equal_numpy_and_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traced block by block (32 x 32 blocks here), the polygons equal whole-image tracing; the largest
    read is far below the image."""
    monkeypatch.setattr(contours, "BLOCK", 32)
    labels = cells((160, 200))
    expected = outer_contours(labels)
    for name in ("rois", "geojson"):
        data = Recorder(as_zarr(labels, (32, 32)))
        (from_zarr,) = write(name, prediction(data, "YX"), tmp_path / "zarr")
        (from_numpy,) = write(name, prediction(labels, "YX"), tmp_path / "numpy")
        assert 0 < data.largest < labels.size // 4
        if name == "rois":
            rois, numpy_rois = read_rois(from_zarr), read_rois(from_numpy)
            assert [r[0] for r in rois] == [r[0] for r in numpy_rois]
            assert sorted(int(r[0]) for r in rois) == list(expected)
            for name_, _, _, _, points in rois:
                np.testing.assert_allclose(points, expected[int(name_)])
            for a, b in zip(rois, numpy_rois):
                np.testing.assert_array_equal(a[4], b[4])
        else:
            features = json.loads(from_zarr.read_text())["features"]
            assert features == json.loads(from_numpy.read_text())["features"]
            assert sorted(f["properties"]["label"] for f in features) == list(expected)
            for feature in features:
                (ring,) = feature["geometry"]["coordinates"]
                np.testing.assert_allclose(ring[:-1], expected[feature["properties"]["label"]])
                assert "plane" not in feature["properties"]


def test_stack_rois_and_features_carry_their_plane(tmp_path: Path) -> None:
    labels = np.zeros((2, 3, 20, 20), np.uint16)
    labels[1, 2, 5:8, 5:9] = 4
    labels[0, 1, 10:12, 10:12] = 4  # the same id in another plane
    (path,) = write("rois", prediction(labels, "TZYX"), tmp_path)
    assert [r[:4] for r in read_rois(path)] == [("t1-z2-4", 0, 2, 1), ("t2-z3-4", 0, 3, 2)]
    (path,) = write("rois", prediction(labels[1], "ZYX"), tmp_path)
    assert [r[:4] for r in read_rois(path)] == [("z3-4", 3, 3, 0)]
    (path,) = write("geojson", prediction(labels, "TZYX"), tmp_path)
    planes = [f["properties"]["plane"] for f in json.loads(path.read_text())["features"]]
    assert planes == [{"t": 0, "z": 1}, {"t": 1, "z": 2}]
    (path,) = write("geojson", prediction(labels[:, 2], "TYX"), tmp_path)
    assert [f["properties"]["plane"] for f in json.loads(path.read_text())["features"]] == [{"t": 1}]


def test_rois_beyond_32767_pixels_keep_their_coordinates(tmp_path: Path) -> None:
    labels = np.zeros((8, 33_000), np.uint16)
    labels[2:5, 32_900:32_910] = 1
    (path,) = write("rois", prediction(as_zarr(labels, (8, 4096)), "YX"), tmp_path)
    (roi,) = roifile.roiread(path)
    x, y = roi.coordinates().mean(axis=0)
    assert (x, y) == pytest.approx((32_905, 3.5), abs=0.3)
