"""A training hook: every epoch's metrics as one JSON line in a file of the run's output folder."""

from __future__ import annotations

import json
from typing import Any

import attrs


@attrs.define
class EpochLogOptions:
    """Options of the ``epoch_log`` hook."""

    file: str = "epochs.jsonl"
    """The log's name, in the run's output folder."""


class EpochLog:
    """Write each epoch's metrics as a JSON line (rank 0); a resumed run logs each epoch once."""

    Options = EpochLogOptions

    def __init__(self, options: EpochLogOptions) -> None:
        self.options = options
        self.lines = 0  # epochs logged, saved with the training state

    def before_train(self, run: Any) -> None:
        if run.main:  # keep the lines the resumed checkpoint has seen (all of them, a fresh run none)
            path = run.output_dir / self.options.file
            kept = path.read_text().splitlines(keepends=True)[: self.lines] if path.exists() else []
            path.write_text("".join(kept))

    def after_epoch(self, run: Any, metrics: dict[str, Any]) -> None:
        self.lines += 1
        if run.main:
            with (run.output_dir / self.options.file).open("a") as log:
                log.write(json.dumps(metrics) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"lines": self.lines}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lines = state["lines"]
