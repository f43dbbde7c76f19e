"""Tests of the synthetic data generator: format, exact labels, variety, determinism, reuse, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from vista2d_core import synthetic

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
