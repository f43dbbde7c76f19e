"""Infer mode end to end: mixed inputs, every writer, a corrupt file, the segment shortcut."""

import json

import numpy as np
import pytest
import roifile
import tifffile
import torch
from conftest import UNTRAINED_POSTPROCESSOR, tiny_model_table, write_recipe
from PIL import Image as PILImage

from vista2d_core.cli import main
from vista2d_core.model import build_model, save_checkpoint
from vista2d_core.recipe import recipe_from_dict, recipe_to_dict

POSTPROCESSOR = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in UNTRAINED_POSTPROCESSOR.items()) + " }"
WRITERS = ["tiff", "flows", "overlay", "rois", "geojson"]


@pytest.fixture
def mixed_folder(tmp_path, rng):
    folder = tmp_path / "images"
    folder.mkdir()
    PILImage.fromarray(rng.integers(0, 255, (96, 128), dtype=np.uint8)).save(folder / "grey8.png")
    PILImage.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    tifffile.imwrite(folder / "two16.tif", rng.integers(0, 4000, (2, 90, 70), dtype=np.uint16))
    tifffile.imwrite(folder / "float.tif", rng.random((64, 100), dtype=np.float32))
    tifffile.imwrite(folder / "rgb16.tif", rng.integers(0, 60000, (70, 90, 3), dtype=np.uint16))
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    (folder / "notes.txt").write_text("not an image")
    return folder


def infer_recipe(tmp_path, inputs, writers=WRITERS):
    return write_recipe(
        tmp_path / "infer.toml", "infer",
        infer={"inputs": inputs, "postprocessor": UNTRAINED_POSTPROCESSOR, "writers": writers},
    )


def test_folder_of_mixed_files_with_one_corrupt(tmp_path, mixed_folder, capsys):
    code = main(["run", str(infer_recipe(tmp_path, ["images"]))])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.tif" in err and err.count("broken.tif") >= 1
    out = tmp_path / "out" / "predictions"
    stems = ["grey8", "rgb", "two16", "float", "rgb16"]
    for stem in stems:
        labels = tifffile.imread(out / f"{stem}_masks.tif")
        assert labels.max() > 0
        flows = tifffile.imread(out / f"{stem}_flows.tif")
        assert flows.dtype == np.float32 and flows.shape == (3, *labels.shape)
        assert PILImage.open(out / f"{stem}_overlay.png").size == labels.shape[::-1]
        assert len(roifile.roiread(out / f"{stem}_rois.zip")) == len(np.unique(labels)) - 1
        features = json.loads((out / f"{stem}.geojson").read_text())["features"]
        assert len(features) == len(np.unique(labels)) - 1
    assert not any(p.name.startswith("broken") for p in out.iterdir())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert (tmp_path / "out" / "resolved_recipe.toml").is_file()


def test_glob_and_missing_input_are_reported_and_the_rest_done(tmp_path, mixed_folder, capsys):
    code = main(["run", str(infer_recipe(tmp_path, ["images/*.png", "images/nothere.tif"], ["tiff"]))])
    assert code == 1
    assert "nothere.tif: no such file or folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "predictions" / "grey8_masks.tif").is_file()


def test_segment_shortcut_uses_the_checkpoint_config(tmp_path, mixed_folder, capsys):
    recipe = recipe_from_dict({"mode": "infer", "model": tiny_model_table()})
    net = build_model(recipe.model)
    checkpoint = save_checkpoint(net, tmp_path / "model.pt", config=recipe_to_dict(recipe), epoch=1)
    code = main(
        [
            "segment", str(mixed_folder / "grey8.png"), str(mixed_folder / "rgb.jpg"),
            "--checkpoint", str(checkpoint), "-o", str(tmp_path / "seg"), "-w", "tiff,geojson",
            "--set", "device=\"cpu\"", "--set", f"infer.postprocessor={POSTPROCESSOR}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [
        "grey8.geojson", "grey8_masks.tif", "resolved_recipe.toml", "rgb.geojson", "rgb_masks.tif"
    ]


def test_segmenter_api_on_arrays():
    from vista2d_core.segmenter import Segmenter

    seg = Segmenter.from_recipe(
        {"mode": "infer", "device": "cpu", "model": tiny_model_table(),
         "infer": {"postprocessor": {"name": "cellpose", "cellprob_threshold": -100.0, "flow_threshold": 0.0}}}
    )
    image = np.random.default_rng(1).random((3, 60, 300)).astype(np.float32)
    labels = seg(image)
    assert labels.shape == (60, 300) and labels.dtype == np.uint16 and labels.max() > 0
    assert seg.logits(image).dtype == torch.float32
