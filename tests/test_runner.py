"""A run of several stages is set up once (device, process group, datalists, synthetic data, file checks)
and writes resolved_recipe.toml once, with the object diameter training measured."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_training import tiny_recipe_data

from vista2d_core import context, distributed
from vista2d_core.recipe import read_recipe_data, recipe_from_dict
from vista2d_core.runner import run
from vista2d_core.train import Trainer


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_train_eval_infer_share_one_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(distributed, "setup", counted("setup", distributed.setup))
    monkeypatch.setattr(context, "resolve_datalists", counted("datalists", context.resolve_datalists))
    monkeypatch.setattr(context, "check_files", counted("check", context.check_files))
    monkeypatch.setattr(context, "write_resolved", counted("resolved", context.write_resolved))
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, epoch, loader: 1.0)  # stand-ins: the stages'
    monkeypatch.setattr(Trainer, "_score", lambda self, items, description, tta=False: 0.5)  # own tests train
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, test=False)
    data["mode"] = ["train", "eval", "infer"]
    assert run(recipe_from_dict(data)) == 0
    assert calls == ["setup", "datalists", "check", "resolved"]
    out = tmp_path / "run"
    assert (out / "eval.json").is_file() and len(list((out / "predictions").glob("*_masks.tif"))) == 2
    assert read_recipe_data(out / "resolved_recipe.toml")["model"]["diameter"] > 0
