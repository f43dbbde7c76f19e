"""Training loop: outputs and checkpoint layout, schedules, optimizers/precision, finetune, resume errors."""

from __future__ import annotations

import csv
import math
from typing import Any

import attrs
import pytest
import torch
from tiny_training import tiny_recipe_data

from vista2d_core.errors import UserError
from vista2d_core.model import read_checkpoint, save_checkpoint
from vista2d_core.recipe import Train, inference_settings, recipe_from_dict
from vista2d_core.train import Trainer, hopeless, lr_factor, train, validation_epochs


def test_validation_schedule_is_the_references():
    schedule = validation_epochs(200)
    assert len(schedule) == 31 and schedule[-1] == 200
    gaps = [b - a for a, b in zip([0, *schedule], schedule)]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > gaps[-1]  # denser towards the end
    assert validation_epochs(15) == [3, 5, 7, 9, 11, 13, 14, 15]
    assert validation_epochs(10, every=4) == [4, 8, 10] and validation_epochs(3, every=5) == [3]
    assert validation_epochs(10, every=0) == []


def test_lr_schedule_matches_monai_warmup_cosine():
    monai = pytest.importorskip("monai.optimizers.lr_scheduler")
    cfg = Train(epochs=20)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = monai.WarmupCosineSchedule(opt, warmup_steps=3, t_total=20, warmup_multiplier=0.1)
    for epoch in range(20):
        assert math.isclose(lr_factor(epoch, cfg), opt.param_groups[0]["lr"], abs_tol=1e-12), epoch
        opt.step()
        ref.step()
    assert [round(lr_factor(e, cfg), 6) for e in range(4)] == [0.1, 0.4, 0.7, 1.0]


def test_hopeless_is_the_references_check():
    assert not hopeless(20, 40, 0.0, 0.01) and hopeless(21, 40, 0.005, 0.01)
    assert not hopeless(21, 40, 0.02, 0.01) and not hopeless(49, 200, 0.0, 0.01) and hopeless(51, 200, 0.0, 0.01)
    assert not hopeless(100, 200, 0.0, 0.0)  # threshold 0 disables


@pytest.mark.slow
def test_training_writes_official_checkpoints_logs_and_history(tmp_path):
    recipe = recipe_from_dict(tiny_recipe_data(tmp_path / "run", tmp_path / "data"))
    best = train(recipe)
    out = tmp_path / "run"
    assert best == out / "model.pt"
    for name in ("model.pt", "model_final.pt"):
        ckpt = read_checkpoint(out / name)
        assert {"state_dict", "config", "epoch", "best_metric"} <= set(ckpt)
        assert any(k.startswith("model.image_encoder.") for k in ckpt["state_dict"])
        assert any(k.startswith("model.mask_decoder.0.") for k in ckpt["state_dict"])
        assert ckpt["config"]["train"]["epochs"] == 2
        assert ckpt["inference"] == inference_settings(ckpt["config"]) and ckpt["inference"]["infer"]["roi_size"] == [64, 64]
    final = read_checkpoint(out / "model_final.pt")
    assert final["epoch"] == 1 and {"optimizer", "scheduler", "rng", "history"} <= set(final["train_state"])
    assert "train_state" not in read_checkpoint(out / "model.pt")
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and all(r["val_ap"] != "" for r in rows)
    assert float(rows[0]["lr"]) == pytest.approx(0.001) and float(rows[1]["lr"]) == pytest.approx(0.0055)
    log = (out / "train.log").read_text()
    assert "epoch 2/2" in log and "test AP@0.5" in log
    assert (out / "resolved_recipe.toml").is_file()


@pytest.mark.slow
def test_adamw_accumulation_and_mixed_precision_train(tmp_path):
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, optimizer="adamw", grad_accumulation=2,
                            batch_size=1, runtime={"name": "amp", "dtype": "bfloat16"}, test=False)
    trainer = Trainer(recipe_from_dict(data))
    dtypes: set[torch.dtype] = set()  # of the linear layers' outputs in training steps

    def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if module.training and isinstance(module, torch.nn.Linear):
            dtypes.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        trainer.fit()
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}  # the training steps ran under the runtime's autocast
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert len(trainer.seen) == 4  # 4 training items, one per step
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 2  # 4 micro-batches, 2 optimizer steps
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())


def test_compile_runtime_trains_the_compiled_module(tmp_path):
    graphs: list[bool] = []  # one entry per graph the backend compiled: whether it was traced for training

    @torch._dynamo.register_backend(name="vista2d_test_recording")
    def recording(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
        graphs.append(torch.is_grad_enabled())
        return gm.forward

    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, test=False,
                            runtime={"name": "compile", "backend": "vista2d_test_recording"})
    trainer = Trainer(recipe_from_dict(data))
    best = trainer.fit()
    assert any(graphs)  # the training steps ran through torch.compile, with gradients
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())
    assert not any(k.startswith("_orig_mod.") for k in read_checkpoint(best)["state_dict"])  # the plain net is saved


@pytest.mark.slow
def test_finetune_starts_from_a_checkpoint(tmp_path):
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, learning_rate=1e-12, test=False,
                            augment={"roi_size": [64, 64], "affine_prob": 0.0})
    start = Trainer(recipe_from_dict(data))
    start._build()
    with torch.no_grad():
        for p in start.net.parameters():
            p.add_(0.5)
    ckpt = save_checkpoint(start.net, tmp_path / "official.pt", config={}, epoch=199, best_metric=0.5)
    data["model"]["checkpoint"] = str(ckpt)
    trainer = Trainer(recipe_from_dict(data))
    trainer.fit()
    saved = read_checkpoint(ckpt)["state_dict"]
    for name, p in trainer.net.named_parameters():
        assert torch.allclose(p, saved[name], atol=1e-6), name


def test_runtime_that_cannot_train_is_refused(tmp_path):
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", runtime="tensorrt")
    with pytest.raises(UserError, match="train.runtime: 'tensorrt' cannot train"):
        Trainer(recipe_from_dict(data))


def test_missing_training_files_are_reported_before_training(tmp_path):
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data")
    recipe = recipe_from_dict(data)
    from vista2d_core.datalist import resolve_datalists

    datalists = resolve_datalists(recipe.data)  # generated once; then files go missing
    folder = datalists[0].path.parent
    (folder / "labels" / "train_001_masks.tif").unlink()
    (folder / "images" / "test_000.png").unlink(missing_ok=True)
    (folder / "images" / "test_000.tif").unlink(missing_ok=True)
    recipe = attrs.evolve(recipe, data=attrs.evolve(recipe.data, synthetic=None, datalists=datalists))
    with pytest.raises(UserError, match=r"(?s)2 data file problem\(s\):\n.*train_001_masks.tif.*\n.*test_000"):
        Trainer(recipe)
    assert not (tmp_path / "run" / "model_final.pt").exists()


def test_resume_needs_a_training_state(tmp_path):
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", resume=True)
    trainer = Trainer(recipe_from_dict(data))
    (tmp_path / "run").mkdir(exist_ok=True)  # Trainer() wrote resolved_recipe.toml there
    torch.save({"state_dict": {}}, tmp_path / "run" / "model_final.pt")
    with pytest.raises(UserError, match="no training state"):
        trainer._build()


@pytest.mark.parametrize("diameter", [0.0, 18.0])
def test_validation_resamples_each_image_when_training_does(tmp_path, monkeypatch, diameter):
    """Trained at one object size (train.augment.diameter), the model is validated as inference runs it:
    each image measured and resampled (auto); trained at the images' own sizes, at scale 1."""
    import vista2d_core.evaluate
    import vista2d_core.segmenter

    seen: list[bool] = []
    monkeypatch.setattr(vista2d_core.segmenter, "Segmenter", lambda recipe, **kw: seen.append(kw["auto"]))
    monkeypatch.setattr(vista2d_core.evaluate, "score_items", lambda *args: [])
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", augment={"roi_size": [64, 64], "diameter": diameter})
    trainer = Trainer(recipe_from_dict({**data, "infer": {**data["infer"], "auto_diameter": True}}))
    trainer.net = torch.nn.Identity()  # not built: no training here
    trainer._score(trainer.split.val, "validating")
    trainer._score(trainer.split.val, "testing", auto=True)
    assert seen == [bool(diameter), True]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_validate_every_0_never_validates_and_keeps_the_last_weights(tmp_path, monkeypatch):
    scored: list[str] = []
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, epoch, loader: 1.0 + epoch)
    monkeypatch.setattr(Trainer, "_score", lambda self, items, description, tta=False: scored.append(description) or 0.5)
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=3, test=False, validate_every=0)
    best = train(recipe_from_dict(data))
    assert scored == [] and best.is_file()
    model, last = torch.load(best, weights_only=False), torch.load(tmp_path / "run" / "model_final.pt", weights_only=False)
    assert model["epoch"] == last["epoch"] == 2  # model.pt: the last epoch's
    with pytest.raises(Exception, match="validate_every"):
        recipe_from_dict({**data, "train": {**data["train"], "validate_every": -1}})


def _step_size(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, **train: Any) -> float:
    """The L2 norm of what one plain SGD step (lr 0.01, no momentum or decay) changes in the parameters."""
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=1, samples_per_epoch=2, optimizer="sgd",
                            learning_rate=0.01, momentum=0.0, weight_decay=0.0, warmup_epochs=0,
                            validate_every=0, test=False, **train)
    build = Trainer._build
    before: list[torch.Tensor] = []

    def build_and_keep(self: Trainer) -> None:
        build(self)
        before.extend(p.detach().clone() for p in self.net.parameters())

    monkeypatch.setattr(Trainer, "_build", build_and_keep)
    trainer = Trainer(recipe_from_dict(data))
    trainer.fit()
    assert trainer.optimizer.state_dict()["state"] == {} and len(trainer.seen) == 2  # one step of plain SGD
    return math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(trainer.net.parameters(), before)))


def test_clip_grad_norm_bounds_the_step(tmp_path, monkeypatch):
    clipped = _step_size(tmp_path / "clipped", monkeypatch, clip_grad_norm=0.05)
    assert clipped == pytest.approx(0.01 * 0.05, rel=1e-3)  # the gradient came out at norm 0.05 exactly
    plain = _step_size(tmp_path / "plain", monkeypatch)
    assert plain > 10 * clipped, plain  # without clipping its norm is far larger
