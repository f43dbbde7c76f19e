"""What a newcomer meets first (issue 15): shipped recipes with the quickstart model, Segmenter from a
checkpoint, arrays in any common layout, switching plugins with --set, recipe check, inputs that are
labels, relative paths on the command line, readable output and object size."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
import torch
from conftest import UNTRAINED_POSTPROCESSOR, disk_labels, tiny_model_table

from vista2d_core.cli import main
from vista2d_core.errors import RecipeError, UserError
from vista2d_core.model import build_model, save_checkpoint
from vista2d_core.recipe import (
    apply_overrides,
    check_stages,
    load_recipe,
    read_recipe_data,
    recipe_from_dict,
    recipe_to_dict,
)
from vista2d_core.segmenter import Segmenter

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def quickstart_like(tmp_path: Path) -> Path:
    """A checkpoint shaped like the quickstart's: conv stem at native resolution, narrow MLPs and neck, its own
    window, TTA on."""
    backbone = {"resize_to": 0, "stem": "conv", "mlp_ratio": 2.0, "neck_channels": 128}
    recipe = recipe_from_dict({
        "mode": "infer", "device": "cpu", "model": {**tiny_model_table(**backbone), "diameter": 20.0},
        "data": {"percentiles": [2.0, 98.0]},
        "infer": {"roi_size": [64, 64], "tta": True, "postprocessor": UNTRAINED_POSTPROCESSOR},
    })
    torch.manual_seed(0)
    return save_checkpoint(build_model(recipe.model), tmp_path / "model.pt", config=recipe_to_dict(recipe), epoch=0)


def _image(size: int = 64) -> np.ndarray:
    return (disk_labels(size, centers=((20, 20), (40, 44)), radius=8) > 0).astype(np.float32) * 200 + 10


# 1, 2: shipped recipes and the Python API with the quickstart's model -------------------------------------
def test_segment_cpu_recipe_fits_the_quickstart_model(quickstart_like, tmp_path, capsys):
    override = [f'model.checkpoint="{quickstart_like}"', 'device="cpu"']
    recipe = load_recipe(RECIPES / "segment_cpu.toml", override)
    assert recipe.model.backbone.options.stem == "conv" and recipe.model.backbone.options.resize_to == 0
    assert recipe.infer.roi_size == (64, 64) and recipe.infer.tta is False  # the recipe's own choice wins
    assert recipe.infer.postprocessor.options.cellprob_threshold == -100.0  # kept from the checkpoint
    labels = Segmenter.from_recipe(RECIPES / "segment_cpu.toml", override)(_image())
    assert labels.shape == (64, 64)
    tifffile.imwrite(tmp_path / "a.tif", _image())
    code = main(["segment", str(tmp_path / "a.tif"), "-c", str(quickstart_like), "-r", str(RECIPES / "segment_cpu.toml"),
                 "-o", str(tmp_path / "seg"), "--set", 'device="cpu"'])
    assert code == 0, capsys.readouterr().err
    assert {"a_masks.tif", "a_overlay.png", "a_rois.zip", "a.geojson"} <= {p.name for p in (tmp_path / "seg").iterdir()}


def test_segmenter_from_checkpoint_takes_its_settings(quickstart_like):
    seg = Segmenter.from_checkpoint(quickstart_like, ['device="cpu"'])
    assert seg.recipe.model.backbone.options.stem == "conv" and seg.recipe.infer.roi_size == (64, 64)
    assert seg.model.model.image_encoder.out_channels == 128  # the narrow network, rebuilt from the checkpoint
    assert seg.recipe.infer.tta is True and seg.recipe.data.percentiles == (2.0, 98.0)
    assert seg(_image()).max() > 0
    plain = Segmenter.from_checkpoint(quickstart_like, ['device="cpu"', "infer.tta=false"])
    assert plain.recipe.infer.tta is False


def test_a_recipe_that_names_only_the_checkpoint_takes_its_settings(quickstart_like, tmp_path):
    (tmp_path / "r.toml").write_text(f'mode = "infer"\n[model]\ncheckpoint = "{quickstart_like.name}"\n')
    recipe = load_recipe(tmp_path / "r.toml")
    assert recipe.model.backbone.options.stem == "conv" and recipe.model.diameter == 20.0
    assert recipe.infer.roi_size == (64, 64) and recipe.data.percentiles == (2.0, 98.0)
    build_model(recipe.model)  # and the weights fit


# 3: arrays ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def array_segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter.from_recipe({"mode": "infer", "device": "cpu", "model": tiny_model_table(),
                                  "infer": {"roi_size": [64, 64], "postprocessor": UNTRAINED_POSTPROCESSOR}})


def test_channels_last_arrays_and_lists(array_segmenter):
    seg = array_segmenter
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)  # as Pillow/imageio give it
    expected = seg(np.moveaxis(rgb, -1, 0))
    labels = seg(rgb)
    assert labels.shape == (64, 80) and expected.max() > 0
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(seg(rgb, axes="YXC"), expected)
    both = seg([rgb, rgb[..., 0]])
    assert isinstance(both, list) and len(both) == 2 and both[1].shape == (64, 80)
    np.testing.assert_array_equal(both[0], expected)


@pytest.mark.parametrize("shape, words", [((5, 64, 64), "pass axes="), ((3, 3, 3), "pass axes="),
                                          ((2, 3, 64, 64), "pass a list")])
def test_ambiguous_arrays_are_an_error_that_says_what_to_do(array_segmenter, shape, words):
    with pytest.raises(UserError, match=re.escape(words)) as err:
        array_segmenter(np.zeros(shape, np.float32))
    assert str(shape) in str(err.value)
    labels = array_segmenter(np.zeros((5, 64, 64), np.float32), axes="CYX")  # said: channels first
    assert labels.shape == (64, 64)


def test_segment_returns_labels_probability_and_flows(array_segmenter):
    image = _image()
    result = array_segmenter.segment(image)
    logits = array_segmenter.logits(image).numpy()
    np.testing.assert_array_equal(result.labels, array_segmenter(image))
    np.testing.assert_allclose(result.flows, logits[1:])
    np.testing.assert_allclose(result.cellprob, 1 / (1 + np.exp(-logits[0])), rtol=1e-6)
    assert result.cellprob.min() >= 0 and result.cellprob.max() <= 1


# 4: switching a plugin with --set --------------------------------------------------------------------------
def test_set_name_starts_from_the_new_plugins_defaults(tmp_path):
    (tmp_path / "r.toml").write_text('mode = "infer"\n[infer]\nruntime = { name = "amp", dtype = "bfloat16" }\n'
                                     'postprocessor = { name = "cellpose", niter = 50 }\n')
    recipe = load_recipe(tmp_path / "r.toml", ["infer.runtime.name=eager"])  # eager has no dtype option
    assert recipe.infer.runtime.name == "eager" and recipe.infer.runtime.options.tf32 is False
    later = load_recipe(tmp_path / "r.toml", ["infer.runtime.name=eager", "infer.runtime.tf32=true"])
    assert later.infer.runtime.options.tf32 is True  # options given after the name stay
    same = load_recipe(tmp_path / "r.toml", ["infer.postprocessor.name=cellpose"])
    assert same.infer.postprocessor.options.niter == 50  # the same plugin keeps its options


# 5: recipe check checks what the stages need ---------------------------------------------------------------
def test_check_rejects_recipes_that_would_fail_at_once(tmp_path, capsys):
    (tmp_path / "t.toml").write_text('mode = "train"\n')
    assert main(["recipe", "check", str(tmp_path / "t.toml")]) == 2
    assert "data.datalists: mode train needs training items" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "official.pt")  # the official layout, no settings
    assert main(["recipe", "check", str(RECIPES / "finetune.toml"), "--set", f'model.checkpoint="{tmp_path / "official.pt"}"']) == 2
    err = capsys.readouterr().err
    assert "data.datalists: mode train needs" in err and "mode eval needs" in err
    (tmp_path / "i.toml").write_text('mode = "infer"\n')
    with pytest.raises(RecipeError, match="infer.inputs: nothing to segment"):
        check_stages(load_recipe(tmp_path / "i.toml"))


def test_a_missing_official_checkpoint_says_where_to_get_it(capsys):
    """Offline with an empty cache (conftest), the reference recipe's model by name says its URL and the
    file to put there; a checkpoint path that does not exist points to docs/models.md."""
    from vista2d_core.pretrained import cache_path, model_card

    assert main(["recipe", "check", str(RECIPES / "vista2d.toml"), "--set", 'infer.inputs=["x"]']) == 2
    err = capsys.readouterr().err
    assert "model.checkpoint: model 'vista2d' is not in the cache" in err
    assert f"download {model_card('vista2d').url} " in err and err.rstrip().endswith(str(cache_path("vista2d")))
    assert main(["recipe", "check", str(RECIPES / "vista2d.toml"), "--set", 'infer.inputs=["x"]',
                 "--set", "model.checkpoint=models/model.pt"]) == 2
    err = capsys.readouterr().err
    assert "model.checkpoint: no such file" in err and "docs/models.md" in err
    assert (RECIPES.parent / "docs" / "models.md").is_file()


# 7: inputs that are label images or outputs; writers given twice -------------------------------------------
def test_globs_and_folders_skip_label_images_and_outputs(tmp_path):
    from vista2d_core.infer import expand_inputs

    for name in ("t000.tif", "t000_masks.tif", "t000_flows.tif", "t000_overlay.png", "t000_cp_masks.png"):
        tifffile.imwrite(tmp_path / name, np.zeros((8, 8), np.uint8)) if name.endswith(".tif") else \
            (tmp_path / name).write_bytes(b"x")
    for pattern in ([str(tmp_path)], [str(tmp_path / "*")], [str(tmp_path / "*.tif")]):
        paths, problems = expand_inputs(pattern, tmp_path)
        assert [p.name for p in paths] == ["t000.tif"] and not problems
    named, _ = expand_inputs([str(tmp_path / "t000_masks.tif")], tmp_path)
    assert [p.name for p in named] == ["t000_masks.tif"]  # a file named on its own is taken


def test_writers_given_twice_is_an_error(quickstart_like, tmp_path, capsys):
    code = main(["segment", str(tmp_path), "-c", str(quickstart_like), "-w", "tiff",
                 "--set", 'infer.writers=["geojson"]'])
    assert code == 2 and "writers given twice" in capsys.readouterr().err


# 8: relative paths typed on the command line ---------------------------------------------------------------
def test_set_paths_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.toml").write_text('mode = "infer"\noutput_dir = "../runs/r"\n')
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("recipes/r.toml", ['infer.inputs=["my_images/"]', 'output_dir="out"'])
    assert recipe.infer.inputs == [str(tmp_path / "my_images")]
    assert recipe.output_dir == tmp_path / "out"
    from_file = load_recipe("recipes/r.toml")
    assert from_file.output_dir == tmp_path / "runs" / "r"  # the file's own paths: its folder, normalised


def test_recipes_with_command_line_values_save_into_checkpoints(tmp_path):
    recipe = recipe_from_dict(apply_overrides({"mode": "infer"}, [
        "infer.runtime.name=eager", 'infer.inputs=["x/"]', "infer.blend=constant", 'model.backbone.variant="vit_t"']))
    config = recipe_to_dict(recipe)
    torch.save({"state_dict": {}, "config": config}, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)  # no custom str class in the pickle
    assert loaded["config"]["infer"]["runtime"]["name"] == "eager" and loaded["config"]["infer"]["blend"] == "constant"
    assert type(recipe.infer.runtime.name) is str and type(recipe.infer.blend) is str


# 9: smaller things -----------------------------------------------------------------------------------------
def test_docs_link_only_to_files_that_exist():
    root = RECIPES.parent
    for page in [root / "README.md", *(root / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        assert "REFERENCE.md" not in text, page
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_eval_table_keeps_long_datalist_names_whole(capsys, monkeypatch):
    from rich.console import Console

    from vista2d_core import evaluate

    name = "/data/a_very_long_folder_name_for_a_datalist/with/more/levels/datalist_of_many_images.json"
    monkeypatch.setattr(evaluate, "console", Console(width=60))
    counts = {"true_objects": 3, "predicted_objects": 2, "matched": 2, "size_ratio": 1.25}
    evaluate.print_table({"thresholds": [0.5], "datalists": [{"datalist": name, "images": 1, "ap": [0.5], **counts}],
                          "overall": [0.5], "totals": counts, "images": [{}]})
    first_column = [line.split("│")[1].strip() for line in capsys.readouterr().out.splitlines() if "│" in line]
    assert name in "".join(first_column)  # folded over several lines, never cut


def test_cli_help_shows_no_rst_markup():
    import typer.testing

    from vista2d_core.cli import app

    for args in ([], ["run"], ["segment"], ["plugins"], ["bench"], ["recipe"], ["recipe", "check"]):
        out = typer.testing.CliRunner().invoke(app, [*args, "--help"]).output
        assert "Usage" in out and "``" not in out and ":func:" not in out, args


def test_readme_tells_how_to_skip_slow_tests():
    readme = (RECIPES.parent / "README.md").read_text()
    assert 'pytest -q -m "not slow"' in readme


def test_roi_set_holds_polygon_rois(tmp_path):
    from vista2d_core import create
    from vista2d_core.interfaces import Image, Prediction

    labels = disk_labels(48, centers=((12, 12), (30, 32)), radius=6)
    prediction = Prediction(labels, Image(np.zeros((1, 48, 48), np.uint8), tmp_path / "x.tif"))
    (path,) = create("writers", "rois").write(prediction, tmp_path, "x")
    rois = roifile.roiread(path)
    assert len(rois) == 2 and all(r.roitype == roifile.ROI_TYPE.POLYGON for r in rois)


def test_tta_from_the_recipe_is_announced(quickstart_like, caplog):
    with caplog.at_level(logging.INFO, logger="vista2d"):
        Segmenter.from_checkpoint(quickstart_like, ['device="cpu"'])
    assert "test-time augmentation on" in caplog.text and "infer.tta=false" in caplog.text


@pytest.mark.slow
def test_resume_logs_one_based_epochs_and_a_finished_run(tmp_path, caplog):
    from tiny_training import tiny_recipe_data

    from vista2d_core.train import Trainer

    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, test=False)
    Trainer(recipe_from_dict(data)).fit()
    assert "epoch 1/1" in (tmp_path / "run" / "train.log").read_text()
    assert read_recipe_data(tmp_path / "run" / "resolved_recipe.toml")["model"]["diameter"] > 0
    with caplog.at_level(logging.INFO, logger="vista2d"):
        Trainer(recipe_from_dict({**data, "train": {**data["train"], "resume": True}})).fit()
    assert "resuming after epoch 1 of 1" in caplog.text and "epoch -1" not in caplog.text
    assert "has finished all 1 epochs: nothing to train" in caplog.text


# 10: object size -------------------------------------------------------------------------------------------
def test_scale_resamples_the_image_and_returns_labels_at_its_size():
    seen = []

    def spy(tiles: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(tiles.shape[-2:]))
        return torch.zeros((tiles.shape[0], 3, *tiles.shape[-2:]))

    recipe = recipe_from_dict({"mode": "infer", "device": "cpu", "model": tiny_model_table(),
                               "infer": {"roi_size": [64, 64], "overlap": 0.0, "scale": 2.0}})
    seg = Segmenter(recipe)
    seg._predict = spy
    assert seg.logits(np.ones((50, 60), np.float32)).shape == (3, 50, 60)
    assert seen == [(64, 64)] * 4  # the 100x120 resampled image takes 2x2 windows (50x60 would take one)


def test_diameter_sets_the_scale_from_the_models_diameter(quickstart_like, tmp_path):
    from vista2d_core.segmenter import image_scale

    (tmp_path / "r.toml").write_text(f'mode = "infer"\n[model]\ncheckpoint = "{quickstart_like.name}"\n')
    assert image_scale(load_recipe(tmp_path / "r.toml", ["infer.diameter=10"])) == 2.0  # 20 px model / 10 px
    with pytest.raises(RecipeError, match="model.diameter"):
        recipe_from_dict({"mode": "infer", "infer": {"diameter": 10.0}})
    with pytest.raises(RecipeError, match="not both"):
        load_recipe(tmp_path / "r.toml", ["infer.diameter=10", "infer.scale=2.0"])


def test_auto_diameter_measures_each_image_and_resamples_it(quickstart_like, tmp_path, caplog):
    """model.diameter 20: a pass at scale 1 finds objects 10 px across: factor 2, and its neighbours x2.8 and
    x1.43, are tried without test-time augmentation; the one whose masks take in the largest share of the
    foreground wins (x1.43 here, not the measured x2), and is segmented again with it when TTA is on (its
    labels are the result when off). 19 px: x1 (the first pass), x1.47, x0.75; nothing found: scale 1."""
    from vista2d_core.segment_file import block_context
    from vista2d_core.segmenter import auto_diameter

    (tmp_path / "r.toml").write_text(
        f'mode = "infer"\n[model]\ncheckpoint = "{quickstart_like.name}"\n[infer]\nauto_diameter = true\n'
    )
    recipe = load_recipe(tmp_path / "r.toml")
    passes: list[tuple[float, bool]] = []
    made: list[float] = []

    def covered(scale: float) -> float:  # the share of the foreground in masks: best at x1.43
        return max(0.05, 1 - abs(np.log(scale / 1.43)))

    for tta in (False, True):
        seg = Segmenter(recipe, tta=tta)

        def logits_at(data, ranges, scale, predict=None, seg=seg):
            passes.append((round(scale, 2), (predict or seg._predict) is seg._plain))
            return torch.full((3, *data.shape[-2:]), float(scale))  # all foreground

        seg._logits = logits_at
        for radius, tried, best in ((5, [1.0, 2.0, 2.8, 1.43], 1.43), (9.5, [1.0, 1.47, 0.75], 1.47), (0, [1.0], 1.0)):
            found = disk_labels(256, centers=((128, 128), (40, 40)), radius=radius) if radius else np.zeros((256, 256), np.uint16)

            def postprocess(logits, found=found):
                scale = float(logits[0, 0, 0])
                made.append(scale)
                if scale == 1.0:
                    return found
                labels = np.zeros((256, 256), np.uint16)
                labels[: int(256 * covered(scale))] = 1
                return labels

            seg.postprocessor = postprocess
            passes.clear()
            made.clear()
            with caplog.at_level("DEBUG", logger="vista2d"):
                labels = seg(np.ones((256, 256), np.float32))
            assert [s for s, _ in passes] == pytest.approx(tried + ([best] if tta else []), rel=0.03)
            assert all(plain for _, plain in passes[: len(tried)])  # the trials: no test-time augmentation
            assert made == pytest.approx(tried + ([best] if tta else []), rel=0.03)  # none made twice
            if tta:
                assert not passes[-1][1]  # the result: with test-time augmentation
            else:
                assert (labels > 0).sum() == (max(256 * int(256 * covered(s)) for s in made[1:]) if radius else 0)
    assert re.search(r"median diameter 10\.\d px; share of the foreground in masks: .*x2\.\d\d 0\.\d\d -> x1\.4\d", caplog.text)
    # training validates without it; an explicit scale or diameter wins; the blocks' context is the widest
    # the factors can need
    assert not Segmenter(recipe, auto=False).auto and seg.auto
    assert not auto_diameter(load_recipe(tmp_path / "r.toml", ["infer.scale=1.5"]))
    assert not auto_diameter(load_recipe(tmp_path / "r.toml", ["infer.diameter=12"]))
    assert block_context(recipe) == math.ceil(max(64 / 0.35 / 2, 2 * 20 / 0.35)) == 115
    with pytest.raises(RecipeError, match="infer.auto_diameter: the model's own object diameter is unknown"):
        recipe_from_dict({"mode": "infer", "infer": {"auto_diameter": True}})
    trained = recipe_from_dict({"mode": ["train", "infer"], "infer": {"auto_diameter": True}})  # training measures it
    assert not auto_diameter(trained)  # until it has
