"""The example third-party plugin (docs/examples/vista2d-example-plugin), found through real metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_registry import make_distribution, site  # noqa: F401  (the fixture)

from vista2d_core import RecipeError, available, load, load_recipe, registry
from vista2d_core.components import Component
from vista2d_core.interfaces import NoOptions
from vista2d_core.options import structure
from vista2d_core.recipe import tomllib

EXAMPLE = Path(__file__).resolve().parents[1] / "docs/examples/vista2d-example-plugin"


def install_example(root: Path) -> None:
    """Install the example as pip would: its package plus a dist-info with the pyproject's entry points."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    package = EXAMPLE / "vista2d_example"
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in package.glob("*.py")}
    make_distribution(root, project["name"], project["entry-points"], files)


def logits_with_blobs() -> np.ndarray:
    """(3, 32, 32): two squares of 16 and 36 pixels and one single pixel above 0, flows zero."""
    logits = np.full((3, 32, 32), -5.0, dtype=np.float32)
    logits[1:] = 0.0
    logits[0, 2:6, 2:6] = 3.0
    logits[0, 20:26, 10:16] = 1.0
    logits[0, 30, 30] = 2.0
    return logits


@pytest.fixture
def example(site):  # noqa: F811
    install_example(site)
    yield site
    for module in [m for m in sys.modules if m.startswith("vista2d_example")]:
        del sys.modules[module]


def test_discovered_from_metadata_with_its_package(example):
    assert "threshold" in available("postprocessors")
    assert "vista2d_example" not in sys.modules
    [row] = [r for r in registry.describe("postprocessors") if r.name == "threshold"]
    assert (row.package, row.error) == ("vista2d-example-plugin", "")
    assert row.summary == "Threshold the cell probability, then label connected components (flows unused)."


def test_postprocessor_contract(example):
    plugin = load("postprocessors", "threshold")
    labels = plugin(plugin.Options(threshold=0.0, min_size=10))(logits_with_blobs())
    assert labels.dtype == np.uint16 and labels.shape == (32, 32)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]  # the single pixel is below min_size
    assert (labels[2:6, 2:6] == 1).all() and (labels[20:26, 10:16] == 2).all()
    high = plugin(plugin.Options(threshold=1.5, min_size=1))(logits_with_blobs())
    assert np.unique(high).tolist() == [0, 1, 2]  # the dimmer square is gone, the pixel stays


def test_accepts_a_torch_tensor(example):
    torch = pytest.importorskip("torch")
    plugin = load("postprocessors", "threshold")
    labels = plugin(plugin.Options())(torch.from_numpy(logits_with_blobs()))
    assert labels.dtype == np.uint16 and labels.max() == 2


def test_from_a_recipe_component(example):
    component = structure(
        Component, {"name": "threshold", "threshold": 0.0}, "infer.postprocessor", kind="postprocessors"
    )
    labels = component.create()(logits_with_blobs())
    assert labels.max() == 2 and component.to_data() == {
        "name": "threshold",
        "threshold": 0.0,
        "min_size": 15,
        "connectivity": 1,
    }
    with pytest.raises(RecipeError) as info:
        structure(
            Component, {"name": "threshold", "threshhold": 1}, "infer.postprocessor", kind="postprocessors"
        )
    assert info.value.problems == [
        "infer.postprocessor.threshhold: unknown option (known: threshold, min_size, connectivity)"
    ]
    with pytest.raises(RecipeError, match=r"^recipe: infer.postprocessor.min_size: must be >= 0: -1$"):
        structure(
            Component, {"name": "threshold", "min_size": -1}, "infer.postprocessor", kind="postprocessors"
        )


def test_from_a_recipe_file(example, monkeypatch):
    """A whole recipe names the plugin; the other components are stand-ins (their tests live elsewhere)."""
    real_load = registry.load

    def load_or_stand_in(kind: str, name: str) -> type:
        if name == "threshold":
            return real_load(kind, name)
        return type(name, (), {"Options": NoOptions})

    monkeypatch.setattr(registry, "load", load_or_stand_in)
    recipe_file = example / "r.toml"
    recipe_file.write_text(
        'mode = "infer"\n[infer]\npostprocessor = { name = "threshold", threshold = 0.0 }\n'
    )
    recipe = load_recipe(recipe_file, ["infer.postprocessor.min_size=1"])
    assert (recipe.infer.postprocessor.name, recipe.infer.postprocessor.options.min_size) == ("threshold", 1)
    assert recipe.infer.postprocessor.create()(logits_with_blobs()).max() == 3


def test_listed_by_the_cli(example):
    path = os.pathsep.join([str(example), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "vista2d_core", "plugins", "postprocessors"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if " threshold " in f" {line} "]
    assert "vista2d-example-plugin" in line and "Threshold the cell probability" in line


@pytest.mark.slow
def test_pip_installs_it(tmp_path, monkeypatch):
    """The example's pyproject builds and installs with pip, and its entry point is then found."""
    pytest.importorskip("setuptools")
    target = tmp_path / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(shutil.copytree(EXAMPLE, tmp_path / "src")),
        ],
        check=True,
    )
    from stevedore import ExtensionManager

    monkeypatch.syspath_prepend(str(target))
    ExtensionManager.ENTRY_POINT_CACHE.clear()
    try:
        assert "threshold" in available("postprocessors")
        assert load("postprocessors", "threshold").__module__ == "vista2d_example.threshold"
    finally:
        ExtensionManager.ENTRY_POINT_CACHE.clear()
        for module in [m for m in sys.modules if m.startswith("vista2d_example")]:
            del sys.modules[module]


class Interrupted(Exception):
    pass


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_its_hook_sees_every_epoch_of_a_run_and_its_resume(example, tmp_path, monkeypatch):
    """``epoch_log``, named in a recipe file, logs epochs 0 and 1 of a run interrupted in epoch 2, keeps them
    through the resume (its state: the lines it wrote) and logs epochs 2 and 3 once each. The training step
    and validation are stand-ins (real training with a hook: tests/test_mlflow.py)."""
    from tiny_training import tiny_recipe_data, write_recipe

    from vista2d_core.train import Trainer

    def train_epoch(self: Trainer, epoch: int, loader: object) -> float:
        if epoch == interrupt_at:
            raise Interrupted
        return 1.0 / (epoch + 1)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "_score", lambda self, items, description, tta=False: 0.25)
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=4, test=False, validate_every=2)
    data["train"]["hooks"] = [{"name": "epoch_log", "file": "log.jsonl"}]
    recipe_file = write_recipe(tmp_path / "r.toml", data)
    interrupt_at = 2
    with pytest.raises(Interrupted):
        Trainer(load_recipe(recipe_file)).fit()
    interrupt_at = -1
    Trainer(load_recipe(recipe_file, ["train.resume=true"])).fit()

    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["train_loss"] for r in rows] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert [r["val_ap"] for r in rows] == [None, 0.25, None, 0.25]
    assert {"lr", "best_ap", "epoch_seconds"} <= set(rows[0])


def test_its_hook_is_checked_against_the_hook_interface(example):
    hook = load("hooks", "epoch_log")
    assert hook.__module__ == "vista2d_example.epoch_log" and "epoch_log" in available("hooks")


def test_its_plugins_pass_the_contract_helper(example):
    """What the plugin guide tells authors to run: the helper finds the installed plugins and checks them."""
    from vista2d_core.testing import check_plugin, installed_plugins

    mine = [(kind, name) for kind, name in installed_plugins() if name in ("threshold", "epoch_log")]
    assert mine == [("postprocessors", "threshold"), ("hooks", "epoch_log")]
    for kind, name in mine:
        check_plugin(kind, name)
