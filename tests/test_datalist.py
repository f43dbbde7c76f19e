"""Datalists: folds, several datalists with basedirs, quick mode, file checks, weighted DDP sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from vista2d_core.datalist import (
    Item,
    TrainDataset,
    TrainSampler,
    check_files,
    diameter_factor,
    load_split,
    read_datalist,
    resample,
    resolve_datalists,
    sample_weights,
)
from vista2d_core.errors import UserError
from vista2d_core.recipe import Data, Datalist, Synthetic


def _write(folder: Path, n_train=5, n_test=2, name="dl.json", size=(40, 50)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    training, testing = [], []
    for i in range(n_train + n_test):
        image = np.full(size, i * 10 + 1, np.uint16)
        image[5:15, 5:15] = 1000
        labels = np.zeros(size, np.uint16)
        labels[5:15, 5:15] = 1
        tifffile.imwrite(folder / f"img{i}.tif", image)
        tifffile.imwrite(folder / f"lab{i}.tif", labels)
        entry = {"image": f"img{i}.tif", "label": f"lab{i}.tif"}
        (training if i < n_train else testing).append({**entry, "fold": i % 3} if i < n_train else entry)
    path = folder / name
    path.write_text(json.dumps({"training": training, "testing": testing}))
    return path


def test_fold_splits_training_items_and_paths_resolve_against_the_datalist(tmp_path):
    split = read_datalist(Datalist(_write(tmp_path)), fold=1)
    assert [i.image.name for i in split.val] == ["img1.tif", "img4.tif"]
    assert [i.image.name for i in split.train] == ["img0.tif", "img2.tif", "img3.tif"]
    assert [i.image for i in split.test] == [tmp_path / "img5.tif", tmp_path / "img6.tif"]


def test_basedir_and_several_datalists(tmp_path):
    a = _write(tmp_path / "a", n_train=3)
    moved = tmp_path / "lists" / "b.json"
    moved.parent.mkdir()
    _write(tmp_path / "b", n_train=4).rename(moved)
    data = Data(datalists=[Datalist(a), Datalist(moved, basedir=tmp_path / "b")], fold=2)
    split = load_split(data)
    assert [i.source for i in split.train] == [0, 0, 1, 1, 1] and [i.source for i in split.val] == [0, 1]
    assert split.train[-1].image == tmp_path / "b" / "img3.tif"
    check_files(split.train + split.val + split.test)


def test_quick_mode_takes_8_and_7(tmp_path):
    split = load_split(Data(datalists=[Datalist(_write(tmp_path, n_train=30, n_test=0))], quick=True))
    assert len(split.train) == 8 and len(split.val) == 7


def test_every_bad_file_is_reported_at_once_one_line_each_with_its_datalist(tmp_path):
    datalist = Datalist(_write(tmp_path, n_train=4))
    split = read_datalist(datalist, fold=0)
    (tmp_path / "img1.tif").unlink()
    (tmp_path / "lab2.tif").write_bytes(b"")
    (tmp_path / "img3.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a corrupt TIFF: not only missing files
    items = [*split.train, *split.val, Item(tmp_path / "notes.txt", None)]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError) as err:
        check_files(items, [datalist])
    header, *lines = str(err.value).splitlines()
    assert header == "4 data file problem(s):"
    assert len(lines) == 4 and all(line.endswith(f"(in {datalist.path})") for line in lines), lines
    by_file = {line.split(":")[0]: line for line in lines}
    assert "no such file" in by_file[str(tmp_path / "img1.tif")]
    assert "empty file" in by_file[str(tmp_path / "lab2.tif")]
    assert "cannot read image" in by_file[str(tmp_path / "img3.tif")]
    assert "no reader for '.txt'" in by_file[str(tmp_path / "notes.txt")]


def test_check_files_reports_labels_that_do_not_fit_and_measures_the_objects(tmp_path):
    from conftest import disk_labels

    datalist = Datalist(_write(tmp_path, n_train=2, size=(48, 48)))
    items = read_datalist(datalist, fold=0).train
    for item in items:
        tifffile.imwrite(item.label, disk_labels(size=48, centers=((10, 10), (30, 32)), radius=5))
    diameter = check_files(items, [datalist])
    assert 9.0 < diameter < 11.0  # disks of radius 5: cellpose's diameter (sqrt of the area / pi, x2)
    tifffile.imwrite(items[0].label, np.zeros((8, 8), np.uint16))
    with pytest.raises(UserError, match=r"labels of shape \(8, 8\) do not fit image"):
        check_files(items, [datalist])


@pytest.mark.parametrize("content, expected", [
    ("{", "not valid JSON"), ('{"training": {}}', "'training' must be a list"),
    ('{"training": [{"image": "a.tif"}]}', r"training\[0\]: expected a 'label' path"),
])
def test_malformed_datalists_name_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=expected) as err:
        read_datalist(Datalist(path), fold=0)
    assert str(path) in str(err.value)


def test_weights_make_datalists_equally_likely():
    items = [Item(Path(f"{i}"), None, source=0 if i < 90 else 1) for i in range(100)]
    weights = sample_weights(items)
    assert torch.isclose(weights[:90].sum(), weights[90:].sum())
    sampler = TrainSampler(100, seed=0, weights=weights, num_samples=4000)
    drawn = torch.tensor([i for i, _ in sampler])
    assert 0.45 < (drawn >= 90).float().mean() < 0.55


@pytest.mark.parametrize("weighted", [False, True])
def test_ranks_share_an_epoch_and_epochs_differ(weighted):
    weights = torch.ones(10, dtype=torch.double) if weighted else None
    ranks = [TrainSampler(10, seed=3, weights=weights, rank=r, world_size=2) for r in range(2)]
    first = [list(s) for s in ranks]
    assert all(len(f) == 5 for f in first)
    if not weighted:  # a permutation split between the ranks
        assert sorted(i for f in first for i, _ in f) == list(range(10))
    for s in ranks:
        s.set_epoch(1)
    assert [list(s) for s in ranks] != first  # re-seeded each epoch (the reference repeats its draw)
    for s in ranks:
        s.set_epoch(0)
    assert [list(s) for s in ranks] == first  # and reproducible


def test_dataset_crops_normalised_images(tmp_path):
    split = read_datalist(Datalist(_write(tmp_path, n_train=2, size=(20, 70))), fold=9)
    dataset = TrainDataset(split.train, Data(), roi=(32, 32), cache=True)
    sample = dataset[(1, 123)]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (32, 32) and sample["index"] == 1
    assert 0 <= sample["image"].min() and sample["image"].max() <= 1
    assert torch.equal(dataset[(1, 123)]["label"], sample["label"])
    assert 1 in dataset.cache


def test_diameter_factor_and_resample_bring_the_objects_to_the_given_size():
    from cellpose.utils import diameters

    image, labels = np.zeros((1, 60, 60), np.float32), np.zeros((60, 60), np.int32)
    yy, xx = np.mgrid[:60, :60]
    for i, (y, x) in enumerate([(15, 15), (15, 45), (45, 30)], 1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 < 25] = i
    image[0] = labels > 0
    factor = diameter_factor(labels, 20.0)
    assert factor == pytest.approx(20.0 / diameters(labels)[0])  # objects ~9.4 px across (cellpose's measure)
    side = round(60 * factor)
    big_image, big = resample(image, labels, (side, side))
    assert big.shape == (side, side) and big_image.shape == (1, side, side) and big.dtype == np.int32
    assert set(np.unique(big)) == {0, 1, 2, 3} and abs(diameters(big)[0] - 20.0) < 1.0
    bright, inside = big_image[0] > 0.5, big > 0  # image and labels stay aligned
    assert (bright & inside).sum() / (bright | inside).sum() > 0.95
    assert diameter_factor(labels, 100.0) == 4.0 and diameter_factor(labels, 1.0) == 0.25  # as inference
    assert diameter_factor(labels, diameters(labels)[0] * 1.01) == 1.0
    assert diameter_factor(np.zeros_like(labels), 20.0) == 1.0  # no objects: as they are


def test_dataset_resamples_to_the_training_diameter_and_the_model_records_it(tmp_path):
    from tiny_training import tiny_recipe_data

    from vista2d_core.context import start_run
    from vista2d_core.recipe import recipe_from_dict

    split = read_datalist(Datalist(_write(tmp_path, n_train=2, size=(40, 50))), fold=9)  # 10x10 squares
    dataset = TrainDataset(split.train, Data(), roi=(64, 64), cache=True, diameter=22.57)  # 11.28 px: x2
    whole = []
    for seed in range(60):
        sample = dataset[(0, seed)]
        image, labels = sample["image"].numpy(), sample["label"].numpy()
        assert labels.shape == (64, 64) and image.shape == (3, 64, 64)  # a 32 px window, resampled
        ys, xs = np.nonzero(labels)
        if len(ys) and min(ys) > 0 and min(xs) > 0 and max(ys) < 63 and max(xs) < 63:  # the square whole
            whole.append(len(ys))
            assert (max(ys) - min(ys) + 1, max(xs) - min(xs) + 1) == (20, 20)
            assert image[0][labels > 0].min() > image[0][labels == 0].max()  # image and labels aligned
    assert len(whole) > 3 and set(whole) == {400}
    assert dataset.factors[0] == pytest.approx(2.0, abs=0.01)
    assert dataset.cache[0][1].shape == (40, 50)  # kept at its own size: memory bounded by the image

    data = tiny_recipe_data(tmp_path / "run", tmp_path / "syn")
    assert start_run(recipe_from_dict(data)).recipe.model.diameter != 22.0  # measured on the labels
    data["train"]["augment"]["diameter"] = 22.0
    assert start_run(recipe_from_dict(data)).recipe.model.diameter == 22.0
    data["model"]["diameter"] = 30.0  # e.g. from the checkpoint fine-tuned: the new training's size wins
    assert start_run(recipe_from_dict(data)).recipe.model.diameter == 22.0


def test_synthetic_hook_generates_a_datalist(tmp_path):
    data = Data(synthetic=Synthetic(folder=tmp_path / "syn", train_images=3, test_images=1, size=64))
    lists = resolve_datalists(data)
    assert lists[0].path.is_file() and lists[0].path.parent == tmp_path / "syn"
    split = load_split(data, lists)
    assert len(split.train) + len(split.val) == 3 and len(split.test) == 1
    check_files(split.train + split.val + split.test)


def test_no_data_is_a_user_error():
    with pytest.raises(UserError, match="data.datalists"):
        resolve_datalists(Data())
