"""MLflow tracking against a real local store: params, the resolved recipe, losses, val/test AP, times."""

from __future__ import annotations

import pytest
from tiny_training import tiny_recipe_data

from vista2d_core.recipe import recipe_from_dict
from vista2d_core.train import train

mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow
def test_training_logs_to_a_local_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=2)
    data["mlflow"] = {"tracking_uri": uri, "experiment": "tiny", "run_name": "first"}
    train(recipe_from_dict(data))

    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.backbone.variant"] == "vit_t"
    assert run.data.params["train_items"] == "4"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [0, 1]
    assert len(client.get_metric_history(run.info.run_id, "val/ap")) == 2
    assert {"train/epoch_time", "val/epoch_time", "test/ap", "train/lr"} <= set(run.data.metrics)
    assert 0.0 <= run.data.metrics["test/ap"] <= 1.0
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "resolved_recipe.toml" in artifacts


def test_an_unusable_store_is_a_user_error(tmp_path):
    from vista2d_core.errors import UserError

    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1)
    data["mlflow"] = {"tracking_uri": "nosuchscheme://x"}
    with pytest.raises(UserError, match="mlflow.tracking_uri"):
        train(recipe_from_dict(data))
