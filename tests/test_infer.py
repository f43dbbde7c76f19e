"""Infer mode end to end: mixed inputs, every writer, a corrupt file, the segment shortcut."""

import json
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
import torch
from conftest import UNTRAINED_POSTPROCESSOR, tiny_model_table, write_recipe
from PIL import Image as PILImage

from vista2d_core.cli import main
from vista2d_core.model import build_model, save_checkpoint
from vista2d_core.recipe import read_recipe_data, recipe_from_dict, recipe_to_dict

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
    broken = mixed_folder / "broken.tif"
    assert f"error: {broken}: cannot read image: " in err  # the file and why it failed, where it failed
    assert f"1 input(s) failed: {broken}" in err  # and in the summary
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
    # no temporary file left; .vista2d holds the record of each image done (infer.resume), no work store
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".vista2d"]
    assert sorted(p.name for p in (out / ".vista2d").iterdir()) == [f"{s}.done.json" for s in sorted(stems)]
    assert (tmp_path / "out" / "resolved_recipe.toml").is_file()


def test_glob_and_missing_input_are_reported_and_the_rest_done(tmp_path, mixed_folder, capsys):
    code = main(["run", str(infer_recipe(tmp_path, ["images/*.png", "images/nothere.tif"], ["tiff"]))])
    assert code == 1
    assert "nothere.tif: no such file or folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "predictions" / "grey8_masks.tif").is_file()


def test_segment_shortcut_uses_the_checkpoint_config(tmp_path, mixed_folder, capsys):
    recipe = recipe_from_dict({"mode": "infer", "model": tiny_model_table(resize_to=0, stem="conv"),
                               "data": {"percentiles": [2.0, 98.0]},
                               "infer": {"roi_size": [64, 64], "tta": True, "inputs": ["elsewhere.tif"]}})
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
    assert sorted(p.name for p in (tmp_path / "seg").iterdir() if p.name != ".vista2d") == [
        "grey8.geojson", "grey8_masks.tif", "resolved_recipe.toml", "rgb.geojson", "rgb_masks.tif"
    ]
    # segmented the way it was trained: backbone, normalisation, window and TTA from the checkpoint
    used = read_recipe_data(tmp_path / "seg" / "resolved_recipe.toml")
    assert used["model"]["backbone"]["stem"] == "conv" and used["data"]["percentiles"] == [2.0, 98.0]
    assert used["infer"]["roi_size"] == [64, 64] and used["infer"]["tta"] is True
    assert [Path(p).name for p in used["infer"]["inputs"]] == ["grey8.png", "rgb.jpg"]


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


def _equivariant(tiles: torch.Tensor) -> torch.Tensor:
    """A stand-in network whose flows follow its input under flips: [x, d/dy x, d/dx x] of channel 0."""
    x = tiles[:, 0]
    dy, dx = torch.gradient(x, dim=(1, 2))
    return torch.stack([x, dy, dx], dim=1)


def test_flip_averaging_corrects_the_flow_signs():
    from vista2d_core.segmenter import flip_averaged

    tiles = torch.rand(2, 3, 24, 32)
    calls = []

    def counted(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape)
        return _equivariant(t)

    # an equivariant network is unchanged by test-time augmentation (wrong signs would cancel the flows)
    assert torch.allclose(flip_averaged(counted)(tiles), _equivariant(tiles), atol=1e-6)
    assert calls == [tiles.shape] * 4
    # a network that ignores the flips: its constant flows average out, its cell probability stays
    constant = flip_averaged(lambda t: torch.ones(t.shape[0], 3, *t.shape[2:]))(tiles)
    assert torch.allclose(constant[:, 0], torch.ones(())) and constant[:, 1:].abs().max() < 1e-6


def test_segmenter_tta_follows_the_recipe_unless_overridden():
    from vista2d_core.segmenter import Segmenter

    recipe = recipe_from_dict({"mode": "infer", "device": "cpu", "model": tiny_model_table(),
                               "infer": {"tta": True, "roi_size": [64, 64]}})
    net = build_model(recipe.model).eval()
    image = np.random.default_rng(2).random((3, 64, 64)).astype(np.float32)
    plain = Segmenter(recipe, model=net, tta=False).logits(image)
    tta = Segmenter(recipe, model=net).logits(image)
    with torch.no_grad():
        x = Segmenter(recipe, model=net, tta=False).preprocess(image)
        flips = [net(x), net(x.flip(-1)).flip(-1) * torch.tensor([1.0, 1.0, -1.0])[:, None, None]]
        flips += [net(x.flip(-2)).flip(-2) * torch.tensor([1.0, -1.0, 1.0])[:, None, None]]
        flips += [net(x.flip(-2, -1)).flip(-2, -1) * torch.tensor([1.0, -1.0, -1.0])[:, None, None]]
    assert torch.allclose(plain, flips[0][0], atol=1e-5)
    assert torch.allclose(tta, torch.stack(flips).mean(0)[0], atol=1e-5)
    assert not torch.allclose(tta, plain, atol=1e-3)
