"""Eval mode: cellpose's AP, per-datalist table, JSON and CSV."""

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import UNTRAINED_POSTPROCESSOR, disk_labels, write_recipe

from vista2d_core.cli import main
from vista2d_core.evaluate import average_precision, matched_sizes
from vista2d_core.imageio import read_image
from vista2d_core.interfaces import Image, Prediction


def test_average_precision_definition():
    true = disk_labels(96, ((30, 30), (60, 64), (30, 75)))
    assert average_precision(true, true, [0.5, 0.9]) == [1.0, 1.0]
    pred = true.copy()
    pred[pred == 3] = 0  # one object missed: TP 2, FN 1
    pred[80:90, 5:15] = 9  # one false object (non-consecutive id): FP 1
    assert average_precision(true, pred, [0.5]) == [pytest.approx(2 / 4)]
    assert average_precision(np.zeros((8, 8), int), np.zeros((8, 8), int), [0.5]) == [1.0]


def test_matched_sizes_counts_matches_and_their_size_bias():
    true = disk_labels(96, ((30, 30), (60, 64), (30, 75)), radius=8)
    grown = disk_labels(96, ((30, 30), (60, 64)), radius=10)  # two found 100/64 the size, one missed
    grown[80:90, 5:15] = 7  # and a false object
    matched, ratio = matched_sizes(true, grown)
    assert matched == 2 and ratio == pytest.approx(np.sum(grown == 1) / np.sum(true == 1), rel=0.05)
    assert ratio > 1.4
    shrunk = disk_labels(96, ((30, 30), (60, 64), (30, 75)), radius=7)
    assert matched_sizes(true, shrunk)[0] == 3 and matched_sizes(true, shrunk)[1] < 0.8
    far = np.roll(true, 40, axis=1)  # nothing overlaps enough
    assert matched_sizes(true, far) == (0, None)
    assert matched_sizes(true, np.zeros_like(true)) == (0, None)
    assert matched_sizes(np.zeros_like(true), true) == (0, None)


def make_datalist(folder, name, count, rng):
    (folder / name).mkdir(parents=True)
    testing = []
    for i in range(count):
        labels = disk_labels(96, ((30 + 5 * i, 30), (60, 64)))
        image = (labels > 0) * 200 + rng.integers(0, 30, labels.shape)
        tifffile.imwrite(folder / name / f"img{i}.tif", image.astype(np.uint8))
        tifffile.imwrite(folder / name / f"img{i}_masks.tif", labels)
        testing.append({"image": f"img{i}.tif", "label": f"img{i}_masks.tif"})
    path = folder / name / "datalist.json"
    path.write_text(json.dumps({"training": [], "testing": testing}))
    return path


def test_eval_mode_writes_table_json_and_csv(tmp_path, rng, capsys):
    a = make_datalist(tmp_path, "a", 2, rng)
    b = make_datalist(tmp_path, "b", 1, rng)
    recipe = write_recipe(
        tmp_path / "eval.toml", "eval",
        data={"datalists": [{"path": str(a)}, {"path": str(b)}]}, infer={"postprocessor": UNTRAINED_POSTPROCESSOR},
    )
    assert main(["run", str(recipe)]) == 0
    assert "AP@0.5" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [r["images"] for r in results["datalists"]] == [2, 1]
    assert len(results["images"]) == 3 and results["thresholds"] == [0.5, 0.75, 0.9]
    means = np.mean([r["ap"] for r in results["datalists"]], axis=0)
    assert np.allclose(results["overall"], means)
    rows = list(csv.reader((tmp_path / "out" / "eval.csv").open()))
    assert rows[0] == ["scope", "name", "images", "ap@0.5", "ap@0.75", "ap@0.9",
                       "true_objects", "predicted_objects", "matched@0.5", "size_ratio"]
    assert [r[0] for r in rows[1:]] == ["image"] * 3 + ["datalist"] * 2 + ["overall"]


def _key(data: np.ndarray) -> bytes:
    return np.ascontiguousarray(data).tobytes()


def oracle(predictions: dict[bytes, np.ndarray]) -> type:
    """A stand-in Segmenter class that answers each image (by its pixels) with the given labels."""

    class Oracle:
        def __init__(self, recipe: Any, *args: Any, **kwargs: Any) -> None:
            self.recipe = recipe

        def __call__(self, data: np.ndarray, **kwargs: Any) -> np.ndarray:
            return predictions[_key(data)]

        def predict(self, image: Image, keep_logits: bool = False, **kwargs: Any) -> Prediction:
            return Prediction(predictions[_key(image.data)], image, None)

    return Oracle


def test_eval_gives_the_known_ap_end_to_end(tmp_path, rng, monkeypatch):
    """Datalist a: 2 images predicted perfectly (AP 1 at every threshold). Datalist b: 1 image whose second
    disk is predicted with radius 9 for 10 (IoU 0.80: a match at 0.5 and 0.75, at 0.9 a miss and a false
    object, AP 1/3). Overall is the mean of the datalists' means: 2/3 at 0.9 (7/9 over the images)."""
    a = make_datalist(tmp_path, "a", 2, rng)
    b = make_datalist(tmp_path, "b", 1, rng)
    predictions = {}
    for image in ("a/img0.tif", "a/img1.tif", "b/img0.tif"):
        labels = tifffile.imread(tmp_path / image.replace(".tif", "_masks.tif"))
        if image.startswith("b/"):
            labels[labels == 2] = 0
            labels[disk_labels(96, ((60, 64),), radius=9) > 0] = 2
        predictions[_key(read_image(tmp_path / image).data)] = labels
    monkeypatch.setattr("vista2d_core.segmenter.Segmenter", oracle(predictions))
    recipe = write_recipe(tmp_path / "eval.toml", "eval", data={"datalists": [{"path": str(a)}, {"path": str(b)}]})
    assert main(["run", str(recipe)]) == 0

    results = json.loads((tmp_path / "out" / "eval.json").read_text())
    scores = {Path(r["image"]).relative_to(tmp_path).as_posix(): r["ap"] for r in results["images"]}
    expected = {"a/img0.tif": [1.0, 1.0, 1.0], "a/img1.tif": [1.0, 1.0, 1.0], "b/img0.tif": [1.0, 1.0, 1 / 3]}
    assert scores.keys() == expected.keys()
    for image, ap in expected.items():
        assert scores[image] == pytest.approx(ap), image
    assert [r["ap"] for r in results["datalists"]] == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([1.0, 1.0, 1 / 3])]
    assert results["overall"] == pytest.approx([1.0, 1.0, 2 / 3])
    rows = {(r[0], r[1]): [float(v) for v in r[3:]] for r in csv.reader((tmp_path / "out" / "eval.csv").open())
            if r[0] != "scope"}
    shrunk = np.sum(disk_labels(96, ((60, 64),), radius=9) > 0) / np.sum(disk_labels(96, ((60, 64),)) > 0)
    # AP at 0.5, 0.75, 0.9; objects annotated, predicted, matched at 0.5; median size of the matched (1 and 0.81)
    assert rows[("image", str(tmp_path / "b" / "img0.tif"))] == pytest.approx([1.0, 1.0, 1 / 3, 2, 2, 2, (1 + shrunk) / 2])
    assert rows[("datalist", str(b))][3:6] == [2, 2, 2]
    assert rows[("overall", "")] == pytest.approx([1.0, 1.0, 2 / 3, 6, 6, 6, 1.0])
    assert results["totals"] == {"true_objects": 6, "predicted_objects": 6, "matched": 6, "size_ratio": 1.0}


def test_eval_reports_missing_label_files(tmp_path, rng, capsys):
    a = make_datalist(tmp_path, "a", 1, rng)
    (tmp_path / "a" / "img0_masks.tif").unlink()
    recipe = tmp_path / "eval.toml"
    recipe.write_text(f'mode = "eval"\ndevice = "cpu"\n[data]\ndatalists = [{{ path = "{a}" }}]\n')
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "img0_masks.tif: no such file" in err and "Traceback" not in err


def test_eval_and_infer_segment_each_testing_image_once(tmp_path, rng, monkeypatch):
    """A run of eval then infer on the testing items segments each image once, writes infer's outputs and
    scores exactly what eval alone scores; with infer.resume the stages run apart (two passes)."""
    from vista2d_core.segmenter import Segmenter

    calls = []
    plane_logits = Segmenter.plane_logits
    monkeypatch.setattr(Segmenter, "plane_logits", lambda self, *a, **k: calls.append(1) or plane_logits(self, *a, **k))
    a = make_datalist(tmp_path, "a", 3, rng)
    data = {"datalists": [{"path": str(a)}]}
    infer = {"postprocessor": UNTRAINED_POSTPROCESSOR, "writers": ["tiff"]}
    alone = write_recipe(tmp_path / "alone.toml", "eval", data=data, infer=infer, output_dir="alone")
    assert main(["run", str(alone)]) == 0 and len(calls) == 3
    calls.clear()
    both = write_recipe(tmp_path / "both.toml", ["eval", "infer"], data=data, infer=infer, output_dir="both")
    assert main(["run", str(both)]) == 0 and len(calls) == 3
    expected = json.loads((tmp_path / "alone" / "eval.json").read_text())
    assert json.loads((tmp_path / "both" / "eval.json").read_text()) == expected
    assert any(image["predicted_objects"] for image in expected["images"])  # something to compare
    masks = sorted((tmp_path / "both" / "predictions").glob("*_masks.tif"))
    assert [m.name for m in masks] == ["img0_masks.tif", "img1_masks.tif", "img2_masks.tif"]
    calls.clear()
    resumed = write_recipe(tmp_path / "resume.toml", ["eval", "infer"], data=data,
                           infer={**infer, "resume": True}, output_dir="resume")
    assert main(["run", str(resumed)]) == 0 and len(calls) == 6
    assert json.loads((tmp_path / "resume" / "eval.json").read_text()) == expected
