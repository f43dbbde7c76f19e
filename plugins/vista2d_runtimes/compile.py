"""Runtime ``compile``: ``torch.compile`` (TorchInductor by default) on the CPU or GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import torch

from vista2d_core.errors import UserError
from vista2d_core.interfaces import Runtime


@attrs.define
class CompileOptions:
    """``torch.compile`` settings. ``mode``: "default", "reduce-overhead" (CUDA graphs), "max-autotune",
    "max-autotune-no-cudagraphs"; ``dynamic``: unset = let torch decide, true/false = force dynamic or
    static shapes; ``fullgraph``: fail on graph breaks; ``backend``: a torch.compile backend name."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    dynamic: bool | None = None
    fullgraph: bool = False
    backend: str = "inductor"


class CompileRuntime(Runtime):
    """torch.compile (inductor; modes default, reduce-overhead, max-autotune), float32; trains."""

    Options = CompileOptions
    can_train = True

    def __init__(self, options: CompileOptions) -> None:
        self.options = options

    def prepare(self, model: Any, example: torch.Tensor, checkpoint: Path | None = None) -> Any:
        """The compiled module (:meth:`train_module`). Compilation happens on the first call, here with
        ``example``, so its cost is not paid by the first real input."""
        compiled = self.train_module(model)
        with torch.inference_mode():
            compiled(example)
        return compiled

    def train_module(self, model: Any) -> Any:
        """``torch.compile(model)`` with these options; it compiles on its first call."""
        o = self.options
        backends = torch._dynamo.list_backends(exclude_tags=())
        if o.backend not in backends:
            raise UserError(f"runtime compile: unknown backend '{o.backend}' (available: {', '.join(backends)})")
        return torch.compile(model, mode=o.mode, dynamic=o.dynamic, fullgraph=o.fullgraph, backend=o.backend)
