"""Eval mode: cellpose's AP, per-datalist table, JSON and CSV."""

import csv
import json

import numpy as np
import pytest
import tifffile
from conftest import UNTRAINED_POSTPROCESSOR, disk_labels, write_recipe

from vista2d_core.cli import main
from vista2d_core.evaluate import average_precision


def test_average_precision_definition():
    true = disk_labels(96, ((30, 30), (60, 64), (30, 75)))
    assert average_precision(true, true, [0.5, 0.9]) == [1.0, 1.0]
    pred = true.copy()
    pred[pred == 3] = 0  # one object missed: TP 2, FN 1
    pred[80:90, 5:15] = 9  # one false object (non-consecutive id): FP 1
    assert average_precision(true, pred, [0.5]) == [pytest.approx(2 / 4)]
    assert average_precision(np.zeros((8, 8), int), np.zeros((8, 8), int), [0.5]) == [1.0]


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
    assert rows[0] == ["scope", "name", "images", "ap@0.5", "ap@0.75", "ap@0.9"]
    assert [r[0] for r in rows[1:]] == ["image"] * 3 + ["datalist"] * 2 + ["overall"]


def test_eval_reports_missing_label_files(tmp_path, rng, capsys):
    a = make_datalist(tmp_path, "a", 1, rng)
    (tmp_path / "a" / "img0_masks.tif").unlink()
    recipe = tmp_path / "eval.toml"
    recipe.write_text(f'mode = "eval"\ndevice = "cpu"\n[data]\ndatalists = [{{ path = "{a}" }}]\n')
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "img0_masks.tif: no such file" in err and "Traceback" not in err
