"""Training hooks (``train.hooks``): events in order, ``early_stopping`` and its resume. The training step and
validation are stand-ins; real training with a hook: tests/test_mlflow.py and tests/test_example_plugin.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tiny_training import tiny_recipe_data

from vista2d_core import RecipeError
from vista2d_core.recipe import recipe_from_dict
from vista2d_core.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Training steps return loss 1.0; validations return the APs of the list, in order."""
    aps: list[float] = []
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, epoch, loader: 1.0)
    monkeypatch.setattr(Trainer, "_score", lambda self, items, description, tta=False: aps.pop(0))
    return aps


def _recipe(tmp_path: Path, **train: object):
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", test=False, validate_every=1, **train)
    return recipe_from_dict(data)


def _epochs(out: Path) -> list[int]:
    return [int(row["epoch"]) for row in csv.DictReader((out / "history.csv").open())]


def test_early_stopping_ends_training_and_a_resume_trains_no_further(tmp_path: Path, stand_ins: list[float]) -> None:
    """Patience 2: AP 0.5, 0.6 (best), 0.6 (not better), 0.55 -> stop after epoch 3 (0-based) of 10."""
    stand_ins += [0.5, 0.6, 0.6, 0.55]
    hooks = [{"name": "early_stopping", "patience": 2}]
    Trainer(_recipe(tmp_path, epochs=10, hooks=hooks)).fit()
    assert _epochs(tmp_path / "run") == [0, 1, 2, 3]
    log = tmp_path / "run" / "train.log"
    assert "stopping before epoch 5 of 10: early_stopping: no validation AP above 0.6000 in 2 validations" in (
        log.read_text())
    Trainer(_recipe(tmp_path, epochs=10, hooks=hooks, resume=True)).fit()  # no AP left: a validation would fail
    assert _epochs(tmp_path / "run") == [0, 1, 2, 3]
    assert log.read_text().count("stopping before epoch 5 of 10") == 2


def test_early_stopping_counts_only_validations_without_improvement(tmp_path: Path, stand_ins: list[float]) -> None:
    stand_ins += [0.5, 0.4, 0.6, 0.5, 0.7, 0.65]
    Trainer(_recipe(tmp_path, epochs=6, hooks=[{"name": "early_stopping", "patience": 2}])).fit()
    assert _epochs(tmp_path / "run") == [0, 1, 2, 3, 4, 5]


def test_early_stopping_warns_when_training_never_validates(tmp_path: Path, stand_ins: list[float], caplog) -> None:
    hooks = [{"name": "early_stopping", "patience": 1}]
    recipe = recipe_from_dict(tiny_recipe_data(tmp_path / "run", tmp_path / "data", test=False, epochs=2,
                                               validate_every=0, hooks=hooks))
    Trainer(recipe).fit()
    assert _epochs(tmp_path / "run") == [0, 1]
    assert "early_stopping: this training never validates (train.validate_every = 0)" in caplog.text


def test_hooks_run_in_the_recipes_order(tmp_path: Path, stand_ins: list[float], monkeypatch) -> None:
    """Two early_stopping hooks: the first to call stop names the reason; both see every epoch."""
    stand_ins += [0.5, 0.5, 0.5]
    seen: list[tuple[int, int]] = []
    from vista2d_hooks.early_stopping import EarlyStopping

    original = EarlyStopping.after_epoch

    def after_epoch(self, run, metrics):
        seen.append((self.options.patience, metrics["epoch"]))
        original(self, run, metrics)

    monkeypatch.setattr(EarlyStopping, "after_epoch", after_epoch)
    hooks = [{"name": "early_stopping", "patience": 2}, {"name": "early_stopping", "patience": 1}]
    Trainer(_recipe(tmp_path, epochs=5, hooks=hooks)).fit()
    assert seen == [(2, 0), (1, 0), (2, 1), (1, 1)]
    assert "in 1 validations" in (tmp_path / "run" / "train.log").read_text()


def test_hook_options_are_checked_at_their_path(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        _recipe(tmp_path, hooks=[{"name": "early_stopping", "patience": 0}, {"name": "early_stoping"}])
    first, second = info.value.problems
    assert first == "train.hooks[0].patience: must be >= 1: 0"
    assert second.startswith("train.hooks[1].name: no plugin 'early_stoping' in vista2d.hooks: "
                             "did you mean 'early_stopping'? installed: early_stopping, mlflow")
