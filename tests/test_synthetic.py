"""Tests of the synthetic data generator: format, exact labels, variety, determinism, reuse, atomicity,
the preview grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from vista2d_core import synthetic
from vista2d_core.cli import main

SMALL = {"train_images": 10, "test_images": 5, "size": 96, "seed": 3}


def _read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset (48 + 8 images, 256x256), generated once."""
    return synthetic.generate(tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def items(full: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    data = json.loads(full.read_text())
    return [
        (_read(full.parent / it["image"]), _read(full.parent / it["label"]))
        for it in data["training"] + data["testing"]
    ]


def test_datalist_format(full: Path) -> None:
    data = json.loads(full.read_text())
    assert len(data["training"]) == 48 and len(data["testing"]) == 8
    assert [it["fold"] for it in data["training"]] == [i % 5 for i in range(48)]
    assert all(set(it) == {"image", "label"} for it in data["testing"])
    for it in data["training"] + data["testing"]:
        for key in ("image", "label"):
            assert not Path(it[key]).is_absolute()
            assert (full.parent / it[key]).is_file()
        assert it["label"] == f"labels/{Path(it['image']).stem}_masks.tif"


def test_labels_exact(items: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, labels in items:
        assert labels.dtype == np.uint16 and labels.shape == image.shape[:2] == (256, 256)
        sizes = np.bincount(labels.ravel())[1:]
        assert len(sizes) > 0 and sizes.min() >= 15  # ids 1..N all present, none below cellpose's min_size


def test_variety(items: list[tuple[np.ndarray, np.ndarray]]) -> None:
    kinds = {(img.dtype.name, img.ndim, int(img.max()) > 4095) for img, _ in items}
    assert {("uint8", 2, False), ("uint8", 3, False), ("uint16", 2, False), ("uint16", 2, True)} <= kinds
    assert any(dtype == "float32" for dtype, _, _ in kinds)
    coverage = [np.mean(labels > 0) for _, labels in items]
    assert min(coverage) < 0.15 and max(coverage) > 0.4  # sparse and crowded images
    assert min(int(labels.max()) for _, labels in items) < 30 < max(int(labels.max()) for _, labels in items)


def _axis_lengths(labels: np.ndarray) -> np.ndarray:
    """(N, 2) major and minor axis lengths of every object (4 x the std along its principal axes)."""
    lengths = []
    for i, box in enumerate(ndimage.find_objects(labels), 1):
        yy, xx = np.nonzero(labels[box] == i)
        variances = np.linalg.eigvalsh(np.cov(np.stack([yy, xx])))
        lengths.append(4 * np.sqrt(np.clip(variances[::-1], 1e-9, None)))
    return np.array(lengths)


def test_shapes_sizes_and_polarities(items: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Cells ~6 to ~80 px long, rods far beyond 5:1, grey images with bright and with dark cells."""
    lengths = np.concatenate([_axis_lengths(labels.astype(np.int32)) for _, labels in items])
    assert lengths[:, 0].min() < 8 and lengths[:, 0].max() > 60
    assert (lengths[:, 0] / lengths[:, 1]).max() > 6
    grey = [(image.astype(float), labels) for image, labels in items if image.ndim == 2]
    brighter = [image[labels > 0].mean() > image[labels == 0].mean() for image, labels in grey]
    assert any(brighter) and not all(brighter)


def test_every_fold_sees_every_look(full: Path) -> None:
    folds = [item["fold"] for item in json.loads(full.read_text())["training"]]
    looks = [synthetic.MIX[i % len(synthetic.MIX)] for i in range(len(folds))]
    for fold in range(5):
        assert {look for look, f in zip(looks, folds) if f == fold} == set(synthetic.STYLES)


def test_preview_grid(tmp_path: Path) -> None:
    path = synthetic.preview(tmp_path / "grid.png", count=5, size=48, seed=1, columns=2)
    grid = np.asarray(Image.open(path))
    tile_width = 2 * 48 + 4 + 12  # plain, gap, outlined, gap
    assert grid.shape == (3 * 48 + 2 * 12, 2 * tile_width, 3)
    yellow = np.all(grid == (255, 255, 0), axis=2)
    assert yellow[:48, 52:100].any() and not yellow[:48, :48].any()  # outlines on the right copy only
    assert np.all(grid[2 * 60 :, tile_width:] == 255)  # the sixth place stays empty
    assert main(["synthetic", "preview", str(tmp_path / "cli.png"), "--count", "2", "--size", "48"]) == 0
    assert Image.open(tmp_path / "cli.png").size == (2 * tile_width, 48)  # 2 images: 2 columns, not 4


def test_preview_unwritable_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["synthetic", "preview", str(tmp_path / "file" / "grid.png"), "--count", "1", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "grid.png" in err and err.count("\n") == 1


def test_make_image_contract() -> None:
    for seed in range(10):
        image, labels = synthetic.make_image(np.random.default_rng(seed), 64)
        assert image.shape[-2:] == labels.shape == (64, 64) and image.ndim in (2, 3)
        assert labels.dtype == np.uint16
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        again = synthetic.make_image(np.random.default_rng(seed), 64)
        assert np.array_equal(image, again[0]) and np.array_equal(labels, again[1])


def test_deterministic_bytes(tmp_path: Path) -> None:
    a, b = synthetic.generate(tmp_path / "a", **SMALL), synthetic.generate(tmp_path / "b", **SMALL)
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.parent) for p in b.parent.rglob("*") if p.is_file())
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)
    other = synthetic.generate(tmp_path / "c", **{**SMALL, "seed": 4})
    assert (other.parent / "labels/train_000_masks.tif").read_bytes() != (
        a.parent / "labels/train_000_masks.tif"
    ).read_bytes()


def test_reuse_and_regenerate(tmp_path: Path) -> None:
    path = synthetic.generate(tmp_path, **SMALL)
    stamp = path.stat().st_mtime_ns
    test_label = (tmp_path / "labels/test_000_masks.tif").read_bytes()
    assert synthetic.generate(tmp_path, **SMALL) == path and path.stat().st_mtime_ns == stamp
    synthetic.generate(tmp_path, **{**SMALL, "train_images": 6})
    assert len(json.loads(path.read_text())["training"]) == 6
    assert (tmp_path / "labels/test_000_masks.tif").read_bytes() == test_label  # test split independent
    synthetic.generate(tmp_path, **{**SMALL, "train_images": 6, "size": 64})
    assert _read(tmp_path / json.loads(path.read_text())["testing"][0]["label"]).shape == (64, 64)


def test_missing_file_regenerates(tmp_path: Path) -> None:
    path = synthetic.generate(tmp_path, **SMALL)
    label = tmp_path / json.loads(path.read_text())["training"][0]["label"]
    label.unlink()
    synthetic.generate(tmp_path, **SMALL)
    assert label.is_file()


def test_interrupted_run_leaves_no_datalist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synthetic.generate(tmp_path, **SMALL)
    calls = 0

    def failing(*args: object) -> tuple[np.ndarray, np.ndarray]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return real(*args)

    real = synthetic._make_pair
    monkeypatch.setattr(synthetic, "_make_pair", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path, **{**SMALL, "seed": 5})
    assert not (tmp_path / "datalist.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    path = synthetic.generate(tmp_path, **{**SMALL, "seed": 5})
    assert json.loads(path.read_text())["synthetic"]["seed"] == 5


def test_composites_have_empty_channels() -> None:
    """Some tissue images have an exactly empty red channel (after noise); some fluorescence images are RGB
    composites with the stain in one channel and the others zero (normalised to zero, not to noise)."""
    empty_red = composites = 0
    for seed in range(16):
        image, _ = synthetic._make_pair(np.random.default_rng(seed), 64, "tissue")
        assert image[1].any() and image[2].any()
        empty_red += int(not image[0].any())
        image, labels = synthetic._make_pair(np.random.default_rng(seed), 64, "fluorescence")
        if image.ndim == 3:
            composites += 1
            lit = [channel for channel in image if channel.any()]
            assert image.dtype == np.uint8 and len(lit) == 1
            if labels.any():
                assert lit[0][labels > 0].mean() > lit[0][labels == 0].mean()  # bright cells on dark
    assert 0 < empty_red < 16 and composites > 0


def test_tissue_epithelia_tile_without_gaps() -> None:
    """About half the tissue images are epithelia: cells share their outlines (no background between
    neighbours) and each cell's nucleus lies inside it, away from the outline (the label is the whole cell)."""
    epithelia = 0
    for seed in range(10):
        image, labels = synthetic._make_pair(np.random.default_rng(seed), 128, "tissue")
        shared = synthetic._edges(labels, between_cells=True).sum() / synthetic._edges(labels, between_cells=False).sum()
        if shared > 0.6:
            epithelia += 1
            depth = ndimage.distance_transform_edt(~synthetic._edges(labels, between_cells=False))
            blue = image[2].astype(float)
            assert blue[(labels > 0) & (depth > 4)].mean() > 1.5 * blue[(labels > 0) & (depth < 2)].mean()
        else:
            assert shared < 0.4  # tissue drawn as separate cells: most outlines border background
    assert 2 <= epithelia <= 8
