"""The ``mlflow`` hook against a real local store: params, the resolved recipe, losses, val/test AP, times, resume."""

from __future__ import annotations

import csv
import re

import pytest
from tiny_training import tiny_recipe_data

from vista2d_core.recipe import recipe_from_dict
from vista2d_core.train import train

mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow
def test_training_logs_its_history_to_mlflow_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    """One epoch, then ``train.resume`` to two: one MLflow run holding both epochs, whose metrics are the
    values of ``history.csv`` and ``train.log``."""
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, test=False)
    data["train"]["hooks"] = [{"name": "mlflow", "tracking_uri": uri, "experiment": "tiny", "run_name": "first"}]
    train(recipe_from_dict(data))
    data["train"].update(epochs=2, resume=True, test=True)
    train(recipe_from_dict(data))

    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])  # the resumed training continued the same run
    run_id = run.info.run_id
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.backbone.variant"] == "vit_t"
    assert run.data.params["train_items"] == "4"
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for metric, column in (("train/loss", "train_loss"), ("train/lr", "lr"), ("train/epoch_time", "train_seconds"),
                           ("val/ap", "val_ap")):
        logged = client.get_metric_history(run_id, metric)
        expected = [(int(r["epoch"]), float(r[column])) for r in rows if r[column] != ""]
        assert [m.step for m in logged] == [step for step, _ in expected], metric
        assert [m.value for m in logged] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-6), metric
    assert len(client.get_metric_history(run_id, "val/ap")) == 2
    test_ap = re.search(r"test AP@0\.5 of model\.pt: ([0-9.]+)", (tmp_path / "run" / "train.log").read_text())
    assert run.data.metrics["test/ap"] == pytest.approx(float(test_ap[1]), abs=5e-5)
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    assert "resolved_recipe.toml" in artifacts


def test_an_unusable_store_is_a_user_error(tmp_path):
    from vista2d_core.errors import UserError

    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1)
    data["train"]["hooks"] = [{"name": "mlflow", "tracking_uri": "nosuchscheme://x"}]
    with pytest.raises(UserError, match="^train.hooks mlflow: tracking_uri 'nosuchscheme://x': "):
        train(recipe_from_dict(data))
    assert mlflow.active_run() is None


def test_the_old_mlflow_table_names_its_new_place(tmp_path):
    from vista2d_core import RecipeError

    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1)
    data["mlflow"] = {"tracking_uri": "sqlite:///x.db"}
    with pytest.raises(RecipeError, match=r'^recipe: mlflow: .*train.hooks = \[\{ name = "mlflow"'):
        recipe_from_dict(data)
