"""``mlflow``: log a training run to MLflow (extra ``mlflow``), on rank 0; a resumed run continues it."""

from __future__ import annotations

from typing import Any

import attrs

from vista2d_core.errors import UserError
from vista2d_core.interfaces import Hook


@attrs.define
class MlflowOptions:
    """Options of the ``mlflow`` hook."""

    tracking_uri: str | None = None
    """Where runs are stored: a folder, ``sqlite:///file.db`` or a server; None: MLflow's own default
    (``$MLFLOW_TRACKING_URI``, else ``./mlruns``)."""
    experiment: str = "vista2d"
    run_name: str | None = None
    log_system_metrics: bool = False


class MlflowHook(Hook):
    """Log params (the flattened recipe), the resolved recipe, losses, learning rate, AP and times to MLflow."""

    Options = MlflowOptions

    def __init__(self, options: MlflowOptions) -> None:
        self.options = options
        self.run_id: str | None = None
        self.mlflow: Any = None

    def before_train(self, run: Any) -> None:
        if not run.main:
            return
        try:
            import mlflow
        except ImportError:
            raise UserError("train.hooks: the mlflow hook needs mlflow: pip install 'vista2d[mlflow]'") from None
        o = self.options
        try:
            if o.tracking_uri:
                mlflow.set_tracking_uri(o.tracking_uri)
            mlflow.set_experiment(o.experiment)
            active = mlflow.start_run(run_id=self.run_id, run_name=None if self.run_id else o.run_name,
                                      log_system_metrics=o.log_system_metrics)
        except mlflow.exceptions.MlflowException as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"train.hooks mlflow: tracking_uri {o.tracking_uri!r}: {first}") from None
        self.mlflow = mlflow
        if self.run_id is None:  # a new run (a resumed one has its params already)
            mlflow.log_params({k: str(v)[:500] for k, v in _flatten(run.config).items()})
            mlflow.log_params({"train_items": len(run.split.train), "val_items": len(run.split.val)})
            mlflow.log_artifact(str(run.output_dir / "resolved_recipe.toml"))
        self.run_id = active.info.run_id

    def after_epoch(self, run: Any, metrics: dict[str, Any]) -> None:
        if self.mlflow is None:
            return
        step = metrics["epoch"]
        self.mlflow.log_metrics({"train/loss": metrics["train_loss"], "train/lr": metrics["lr"],
                                 "train/epoch_time": metrics["train_seconds"]}, step=step)
        if metrics["val_ap"] is not None:
            self.mlflow.log_metrics({"val/ap": metrics["val_ap"], "val/epoch_time": metrics["val_seconds"]},
                                    step=step)

    def after_train(self, run: Any) -> None:
        if self.mlflow is None:
            return
        if run.test_ap is not None:
            self.mlflow.log_metric("test/ap", run.test_ap)
        self._end("FINISHED")

    def on_error(self, run: Any, error: BaseException) -> None:
        if self.mlflow is not None:
            self._end("FAILED")

    def _end(self, status: str) -> None:
        self.mlflow.end_run(status)
        self.mlflow = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state["run_id"]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
