"""A run killed with SIGKILL mid-training and resumed ends bit-identical to an uninterrupted run; a resumed
run continues the global RNGs (python, numpy, torch) where the interrupted one left them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import tiny_recipe_data, write_recipe

from vista2d_core.model import read_checkpoint
from vista2d_core.recipe import recipe_from_dict
from vista2d_core.train import Trainer

EPOCHS = 3


def _command(recipe: Path, *overrides: str) -> list[str]:
    sets = [a for o in overrides for a in ("--set", o)]
    return [sys.executable, "-m", "vista2d_core", "run", str(recipe), *sets]


def _recipe(tmp_path: Path, name: str) -> Path:
    data = tiny_recipe_data(tmp_path / name, tmp_path / "data", epochs=EPOCHS, test=False)
    return write_recipe(tmp_path / f"{name}.toml", data)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path):
    straight = _recipe(tmp_path, "straight")
    subprocess.run(_command(straight), check=True, env=_env(), capture_output=True)

    killed = _recipe(tmp_path, "killed")
    final = tmp_path / "killed" / "model_final.pt"
    proc = subprocess.Popen(_command(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not final.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert read_checkpoint(final)["epoch"] < EPOCHS - 1  # really interrupted before the end

    subprocess.run(_command(killed, "train.resume=true"), check=True, env=_env(), capture_output=True)

    a, b = read_checkpoint(tmp_path / "straight" / "model_final.pt"), read_checkpoint(final)
    assert a["epoch"] == b["epoch"] == EPOCHS - 1
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    momentum_a = a["train_state"]["optimizer"]["state"]
    momentum_b = b["train_state"]["optimizer"]["state"]
    assert all(torch.equal(momentum_a[k]["momentum_buffer"], momentum_b[k]["momentum_buffer"]) for k in momentum_a)
    assert [r["train_loss"] for r in a["train_state"]["history"]] == [r["train_loss"] for r in b["train_state"]["history"]]
    assert "resuming after epoch" in (tmp_path / "killed" / "train.log").read_text()


class Interrupted(Exception):
    pass


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_resume_restores_the_global_rngs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in pieces draw from seeded generators of their own, but a plugin may use the global RNGs
    (dropout, say): the epochs it trains after a resume must draw what an uninterrupted run draws. The
    training step is a stand-in that only draws (and can be interrupted); validation is a constant."""
    draws: dict[str, list[tuple[float, float, float]]] = {}
    stop: dict[str, int] = {}

    def train_epoch(self: Trainer, epoch: int, loader: object) -> float:
        name = self.output_dir.name
        if epoch == stop.get(name):
            raise Interrupted
        draws.setdefault(name, []).append((random.random(), float(np.random.rand()), torch.rand(()).item()))
        return 1.0

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "_score", lambda self, items, description, tta=False: 0.5)

    def run(name: str, **train: object) -> None:
        Trainer(recipe_from_dict(tiny_recipe_data(tmp_path / name, tmp_path / "data", epochs=EPOCHS, test=False,
                                                  **train))).fit()

    run("straight")
    stop["killed"] = 2
    with pytest.raises(Interrupted):
        run("killed")
    del stop["killed"]
    run("killed", resume=True)
    assert len(draws["straight"]) == len(draws["killed"]) == EPOCHS
    assert draws["killed"] == draws["straight"]
    assert len(set(draws["straight"])) == EPOCHS  # each epoch drew anew
