"""Every recipe in recipes/ is valid; the only problems allowed are model files a user downloads or trains
(models named, such as "vista2d", are not in the tests' empty offline cache) and the real images beside
the repository, where this checkout has none."""

from pathlib import Path

import pytest
import torch

from vista2d_core.errors import RecipeError
from vista2d_core.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_is_valid(path):
    try:
        load_recipe(path)
    except RecipeError as exc:
        allowed = ("model.",) if REALDATA.is_dir() else ("model.", "data.datalists[0].path")
        missing = ("no such file", "is not in the cache")
        others = [p for p in exc.problems if not any(m in p for m in missing) or not p.startswith(allowed)]
        assert not others, others


def test_reference_recipe_is_the_reference_setup(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "model.pt")  # official checkpoints carry no settings
    recipe = load_recipe(RECIPES[0].parent / "vista2d.toml", [f'model.checkpoint="{tmp_path / "model.pt"}"'])
    backbone = recipe.model.backbone.options
    assert (backbone.variant, backbone.resize_to) == ("vit_b", 1024)
    post = recipe.infer.postprocessor.options
    assert (post.niter, post.cellprob_threshold, post.flow_threshold, post.min_size) == (200, 0.4, 0.4, 15)
    assert (tuple(recipe.infer.roi_size), recipe.infer.overlap) == ((256, 256), 0.625)
