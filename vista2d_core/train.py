"""``mode = "train"``: the reference's training loop, driven by the recipe's ``[train]``.

Writes into ``output_dir``: ``model.pt`` (best validation AP@0.5) and ``model_final.pt`` (last epoch), both
in the official layout ``{"state_dict", "config", "epoch", "best_metric"}`` plus ``"inference"`` (the settings
that go with the weights, :func:`~vista2d_core.recipe.inference_settings`), atomically; ``model_final.pt``
also carries ``"train_state"`` (optimizer, scheduler, scaler, history, RNG states) so that
``train.resume = true`` continues bit-identically. ``train.log`` and ``history.csv`` log the run; the hooks
of ``train.hooks`` (plugins of kind ``vista2d.hooks``: MLflow, early stopping, ...) see its events and are
resumed with it (their ``state_dict``).
Under torchrun: DDP (NCCL on GPU, gloo on CPU), SyncBatchNorm on CUDA, each rank a share of every epoch,
rank 0 logs and saves; after every epoch's training steps, rank 0's buffers (BatchNorm running statistics)
are broadcast, so every rank validates and ends with identical parameters and buffers. The sampler and the
augmentations are re-seeded from (seed, epoch, rank) every epoch, so their state never needs saving; the
global RNGs (python, numpy, torch, CUDA) are saved.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch.utils.data import DataLoader

from . import distributed
from .augment import Augmenter
from .context import RunContext, start_run
from .datalist import (
    Item,
    TrainDataset,
    TrainSampler,
    sample_weights,
)
from .errors import UserError
from .files import atomic_write_text
from .model import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from .progress import progress_bar
from .recipe import Recipe, Train, inference_settings, recipe_to_dict

log = logging.getLogger("vista2d")
HISTORY_FIELDS = ("epoch", "lr", "train_loss", "val_ap", "train_seconds", "val_seconds", "epoch_seconds")


def validation_epochs(epochs: int, every: int | None = None, fraction: float = 0.16) -> list[int]:
    """Epoch counts (1-based) after which to validate: the reference's ``schedule_validation_epochs``
    (sine-spaced, denser towards the end) or every ``every`` epochs and after the last; none when ``every``
    is 0."""
    if every == 0:
        return []
    if every is not None:
        return sorted({*range(every, epochs + 1, every), epochs})
    x = (np.sin(np.linspace(0, np.pi / 2, max(10, int(fraction * epochs)))) * epochs).astype(int)
    x = np.cumsum(np.sort(np.diff(np.unique(x)))[::-1])
    x[-1] = epochs
    return x.tolist()


def lr_factor(epoch: int, train: Train) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): MONAI's WarmupCosineSchedule as the reference uses it."""
    warm = min(train.warmup_epochs, train.epochs)
    if epoch < warm:
        return train.warmup_multiplier + (1 - train.warmup_multiplier) * epoch / warm
    progress = (epoch - warm) / max(1, train.epochs - warm)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def hopeless(epoch: int, epochs: int, ap: float, threshold: float) -> bool:
    """The reference's divergence check: after epoch max(20, epochs / 4) (0-based), AP below ``threshold``."""
    return epoch > max(20, epochs / 4) and ap < threshold


def train(recipe: Recipe, context: RunContext | None = None) -> Path:
    """Train as ``recipe`` says; return the best checkpoint (``output_dir/model.pt``). ``context``: the run's
    (:func:`~vista2d_core.context.start_run`), set up from ``recipe`` when not given."""
    return Trainer(recipe, context).fit()


class Trainer:
    """One training run. ``fit()`` -> the best checkpoint; ``net`` is the trained network and ``seen`` the
    item indices this rank trained on in the last epoch (in order). It is the ``run`` hooks receive
    (:class:`~vista2d_core.interfaces.Hook`): ``recipe``, ``config``, ``output_dir``, ``net``, ``optimizer``,
    ``device``, ``split``, ``epoch``, ``main``, ``test_ap`` and :meth:`stop`."""

    def __init__(self, recipe: Recipe, context: RunContext | None = None) -> None:
        runtime = recipe.train.runtime.create()
        if not runtime.can_train:
            raise UserError(f"train.runtime: '{recipe.train.runtime.name}' cannot train (use eager or amp)")
        if context is None:
            context = start_run(recipe)
            recipe = context.recipe
        self.recipe, self.runtime = recipe, runtime
        self.config = recipe_to_dict(recipe)  # as plain data, saved in every checkpoint
        self.cfg = recipe.train
        self.output_dir = recipe.output_dir
        self.main = distributed.is_main_process()
        self.device, self.split = context.device, context.split
        self.loss = self.cfg.loss.create()
        self.seen: list[int] = []
        self.history: list[dict[str, Any]] = []
        self.best_metric, self.best_epoch, self.start_epoch = -1.0, -1, 0
        self.epoch = 0
        self.test_ap: float | None = None
        self.stop_reason: str | None = None
        self.hooks = [(hook.name, hook.create()) for hook in self.cfg.hooks]

    def stop(self, reason: str) -> None:
        """End training after the current epoch (hooks call it, e.g. early stopping); ``reason`` is logged."""
        self.stop_reason = reason

    def _info(self, message: str, *args: Any) -> None:
        """Progress messages: rank 0 only (other ranks log them at debug level)."""
        log.log(logging.INFO if self.main else logging.DEBUG, message, *args)

    # ----------------------------------------------------------------------------------- set-up
    def _build(self) -> None:
        cfg = self.cfg
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        _seed_everything(self.recipe.seed)
        state = self._resume_state()
        net = build_model(self.recipe.model if state is None else _without_checkpoint(self.recipe.model))
        if state is not None:
            load_checkpoint(net, self.output_dir / "model_final.pt")
        net = net.to(self.device)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        if distributed.world_size() > 1:
            if self.device.type == "cuda":
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
                self.net = net
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.model = self.runtime.train_module(net)  # torch.compile'd by runtime compile; self.net is saved
        params = [p for p in self.net.parameters() if p.requires_grad]
        fused = self.device.type in ("cpu", "cuda")  # one kernel for all parameters (3x faster on CPU)
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused
            )
        else:
            self.optimizer = torch.optim.AdamW(
                params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(e, cfg))
        self.scaler = self.runtime.grad_scaler(self.device)
        if state is not None:
            self._restore(state)

    def _resume_state(self) -> dict[str, Any] | None:
        if not self.cfg.resume:
            return None
        path = self.output_dir / "model_final.pt"
        if not path.is_file():
            log.warning("train.resume: no %s yet, starting from scratch", path)
            return None
        state = read_checkpoint(path).get("train_state")
        if state is None:
            raise UserError(f"{path}: has no training state to resume from (written by another tool?)")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.history = list(state["history"])
        for (name, hook), (saved_name, saved) in zip(self.hooks, state.get("hooks", []), strict=False):
            if name == saved_name and saved is not None:  # the same hook at the same place in train.hooks
                hook.load_state_dict(saved)
        _set_rng_state(state["rng"][distributed.rank()] if distributed.rank() < len(state["rng"]) else state["rng"][0])
        best = f"best AP@0.5 {self.best_metric:.4f} at epoch {self.best_epoch + 1}" if self.best_epoch >= 0 else "not validated yet"
        self._info("resuming after epoch %d of %d (%s)", state["epoch"] + 1, self.cfg.epochs, best)
        if self.start_epoch >= self.cfg.epochs:
            log.warning("train.resume: %s has finished all %d epochs: nothing to train (raise train.epochs to go on)",
                        self.output_dir / "model_final.pt", self.cfg.epochs)

    def _loader(self) -> DataLoader:
        cfg, data = self.cfg, self.recipe.data
        weights = sample_weights(self.split.train) if data.weighted_sampling else None
        self.sampler = TrainSampler(len(self.split.train), self.recipe.seed, weights, cfg.samples_per_epoch)
        dataset = TrainDataset(self.split.train, data, cfg.augment.roi_size, cache=data.cache, diameter=cfg.augment.diameter)
        return DataLoader(
            dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=cfg.num_workers > 0,
        )

    # ----------------------------------------------------------------------------------- loop
    def fit(self) -> Path:
        """Train from the start (or the resumed epoch) to ``train.epochs``; return ``model.pt``."""
        handler = self._start_logging()
        try:
            self._build()
            loader = self._loader()
            # validation epochs (1-based); none without validation items or with validate_every = 0
            self.validations = set(validation_epochs(self.cfg.epochs, self.cfg.validate_every, self.cfg.validation_fraction)
                                if self.split.val else [])
            self._log_start(len(loader))
            self.epoch = self.start_epoch
            try:
                self._call_hooks("before_train")
                for epoch in range(self.start_epoch, self.cfg.epochs):
                    if self._stopping(epoch):
                        break
                    self.epoch = epoch
                    self._epoch(epoch, loader)
                best = self.output_dir / "model.pt"
                if self.cfg.test and any(item.label for item in self.split.test):
                    self._final_test(best)
                self._call_hooks("after_train")
            except BaseException as error:
                self._call_hooks("on_error", error)
                raise
            distributed.barrier()
            return best
        finally:
            if handler is not None:
                log.removeHandler(handler)
                handler.close()

    def _call_hooks(self, event: str, *args: Any) -> None:
        for _, hook in self.hooks:
            method = getattr(hook, event, None)
            if method is not None:
                method(self, *args)

    def _stopping(self, epoch: int) -> bool:
        """Whether a hook on any rank has asked to stop before ``epoch`` (a collective: every rank calls it)."""
        reasons = [r for r in distributed.gather(self.stop_reason) if r]
        if reasons:
            self._info("stopping before epoch %d of %d: %s", epoch + 1, self.cfg.epochs, reasons[0])
        return bool(reasons)

    def _epoch(self, epoch: int, loader: DataLoader) -> None:
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        loss = self._train_epoch(epoch, loader)
        train_seconds = time.perf_counter() - start
        ap, val_seconds = None, 0.0
        if epoch + 1 in self.validations:
            ap = self._score(self.split.val, "validating")
            val_seconds = time.perf_counter() - start - train_seconds
        self.scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": loss, "val_ap": ap, "train_seconds": train_seconds,
               "val_seconds": val_seconds, "epoch_seconds": time.perf_counter() - start}
        self.history.append(row)
        improved = ap is not None and ap > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = ap, epoch
        self._call_hooks("after_epoch", {**row, "best_ap": self.best_metric if self.best_epoch >= 0 else None})
        rng = distributed.gather(_rng_state())  # every rank's, for resuming (a collective: all ranks take part)
        if self.main:
            self._save(epoch, improved or not self.validations, ap, rng)  # never validated: the last is the best
        shown = f"val AP@0.5 {ap:.4f} (best {self.best_metric:.4f} at epoch {self.best_epoch + 1})" if ap is not None else ""
        self._info("epoch %d/%d loss %.4f lr %.2e %.1fs %s", epoch + 1, self.cfg.epochs, loss, lr,
                 row["epoch_seconds"], shown)
        if ap is not None and hopeless(epoch, self.cfg.epochs, ap, self.cfg.stop_below_ap):
            raise UserError(
                f"training stopped: validation AP@0.5 is {ap:.4f} at epoch {epoch + 1}; the optimisation most "
                f"likely diverged: try a smaller train.learning_rate than {self.cfg.learning_rate} "
                f"(or set train.stop_below_ap = 0)"
            )

    def _train_epoch(self, epoch: int, loader: DataLoader) -> float:
        cfg, rank = self.cfg, distributed.rank()
        self.sampler.set_epoch(epoch)
        augment = Augmenter(cfg.augment, torch.Generator().manual_seed(_mix(self.recipe.seed, epoch, rank)))
        memory = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model.train()
        self.seen = []
        total, count = torch.zeros((), dtype=torch.float64), 0
        steps = len(loader)
        with progress_bar() as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps)
            for i, batch in enumerate(loader):
                self.seen += batch["index"].tolist()
                images = batch["image"].to(self.device, non_blocking=True)
                labels = batch["label"].to(self.device, non_blocking=True)
                images, labels = augment(images, labels)
                targets = self.loss.targets(labels)
                step = (i + 1) % cfg.grad_accumulation == 0 or i + 1 == steps
                sync = contextlib.nullcontext() if step or not hasattr(self.model, "no_sync") else self.model.no_sync()
                with sync:
                    with self.runtime.autocast(self.device):
                        logits = self.model(images.contiguous(memory_format=memory))
                    loss = self.loss(logits.float(), targets)
                    scaled = loss / cfg.grad_accumulation
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                if step:
                    if cfg.clip_grad_norm:
                        if self.scaler:
                            self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip_grad_norm)
                    if self.scaler:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                total += loss.detach().double().cpu() * len(images)
                count += len(images)
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} loss {total.item() / count:.4f}")
        # DDP syncs gradients, so parameters agree; buffers (BatchNorm running statistics) it only broadcasts
        # from rank 0 before each forward: after the last step every rank would keep its own update.
        distributed.broadcast_buffers(self.net)
        return _mean_over_ranks(total.item(), count)

    def _score(self, items: list[Item], description: str, tta: bool = False, auto: bool | None = None) -> float:
        """Mean AP@0.5 over ``items`` (each rank scores its share), test-time augmented when ``tta``,
        measured and resampled image by image when ``auto`` (and ``infer.auto_diameter``); by default when
        training resamples its images to one object size (``train.augment.diameter``)."""
        from .evaluate import score_items
        from .segmenter import Segmenter

        if auto is None:
            auto = bool(self.cfg.augment.diameter)

        segmenter = Segmenter(self.recipe, model=self.net, device=self.device, tta=tta, auto=auto)
        scores = score_items(segmenter, distributed.shard(items), [0.5], description)
        per_image = [s.ap[0] for s in scores]
        self.net.train()
        gathered = distributed.gather(per_image)
        return float(np.mean(gathered)) if gathered else 0.0

    def _final_test(self, best: Path) -> None:
        distributed.barrier()  # rank 0 has written model.pt
        if best.is_file():
            load_checkpoint(self.net, best)
        labelled = [item for item in self.split.test if item.label is not None]
        self.test_ap = self._score(labelled, "testing", tta=self.recipe.infer.tta, auto=True)
        self._info("test AP@0.5 of %s: %.4f (%d images)", best.name, self.test_ap, len(labelled))

    # ----------------------------------------------------------------------------------- outputs
    def _save(self, epoch: int, best: bool, ap: float | None, rng: list[dict[str, Any]]) -> None:
        settings = {"config": self.config, "inference": inference_settings(self.config)}
        state = {
            "epoch": epoch, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None, "history": self.history,
            "rng": rng, "hooks": [[name, hook.state_dict() if hasattr(hook, "state_dict") else None]
                                 for name, hook in self.hooks],
        }
        if best:
            save_checkpoint(self.net, self.output_dir / "model.pt", **settings, epoch=epoch, best_metric=self.best_metric)
        metric = ap if ap is not None else -1.0
        save_checkpoint(self.net, self.output_dir / "model_final.pt", **settings, epoch=epoch, best_metric=metric,
                        train_state=state)
        _write_history(self.output_dir / "history.csv", self.history)

    def _start_logging(self) -> logging.Handler | None:
        if not self.main:
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.output_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        return handler

    def _log_start(self, steps: int) -> None:
        cfg, s = self.cfg, self.split
        params = sum(p.numel() for p in self.net.parameters())
        self._info(
            "training %.1fM parameters on %s x%d: %d train / %d validation / %d test items, %d epochs of %d steps "
            "(batch %d x %d accumulation), %s lr %g, runtime %s", params / 1e6, self.device, distributed.world_size(),
            len(s.train), len(s.val), len(s.test), cfg.epochs, steps, cfg.batch_size, cfg.grad_accumulation,
            cfg.optimizer, cfg.learning_rate, cfg.runtime.name,
        )
        if not s.val:
            log.warning("no validation items (fold %d): model.pt is the last epoch's weights", self.recipe.data.fold)


# --------------------------------------------------------------------------------------- helpers
def _without_checkpoint(model: Any) -> Any:
    return attrs.evolve(model, checkpoint=None)


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """The global RNG states, as tensors and plain values (loadable with ``weights_only``)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": np_state["state"]["pos"],
                  "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _mean_over_ranks(total: float, count: int) -> float:
    pairs = distributed.gather((total, count))
    n = sum(c for _, c in pairs)
    return sum(t for t, _ in pairs) / n if n else 0.0


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """``history.csv`` (one row per epoch, rewritten atomically from the run's state)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row[k] is None else round(row[k], 6) if isinstance(row[k], float) else row[k])
                         for k in HISTORY_FIELDS})
    atomic_write_text(path, text.getvalue())

