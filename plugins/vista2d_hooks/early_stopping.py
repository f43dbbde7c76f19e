"""``early_stopping``: end training when validation AP@0.5 has not improved for ``patience`` validations."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from vista2d_core.interfaces import Hook


@attrs.define
class EarlyStoppingOptions:
    """Options of the ``early_stopping`` hook."""

    patience: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    """Validations in a row without improvement after which training ends."""
    min_delta: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    """An improvement is a validation AP above the best so far by more than this."""


class EarlyStopping(Hook):
    """End training when validation AP@0.5 stops improving (patience counted in validations)."""

    Options = EarlyStoppingOptions

    def __init__(self, options: EarlyStoppingOptions) -> None:
        self.options = options
        self.best: float | None = None
        self.bad = 0

    def before_train(self, run: Any) -> None:
        if self.bad >= self.options.patience:  # resumed after it stopped: train no further
            run.stop(self._reason())
        elif run.main and (not run.split.val or run.recipe.train.validate_every == 0):
            logging.getLogger("vista2d").warning(
                "early_stopping: this training never validates (%s), so it never stops early",
                "train.validate_every = 0" if run.split.val else "no validation items")

    def after_epoch(self, run: Any, metrics: dict[str, Any]) -> None:
        ap = metrics["val_ap"]
        if ap is None:
            return
        if self.best is None or ap > self.best + self.options.min_delta:
            self.best, self.bad = ap, 0
        else:
            self.bad += 1
        if self.bad >= self.options.patience:
            run.stop(self._reason())

    def _reason(self) -> str:
        return f"early_stopping: no validation AP above {self.best:.4f} in {self.bad} validations"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = state["best"], state["bad"]
