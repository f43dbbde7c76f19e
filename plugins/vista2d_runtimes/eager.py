"""Runtime ``eager``: plain PyTorch in float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from vista2d_core.interfaces import Runtime


@attrs.define
class EagerOptions:
    """``tf32``: allow TensorFloat-32 matmuls/convolutions on CUDA (faster, ~1e-3 relative error)."""

    tf32: bool = False


class EagerRuntime(Runtime):
    """Plain PyTorch, float32 (optionally TF32 on CUDA); trains."""

    Options = EagerOptions
    can_train = True

    def __init__(self, options: EagerOptions) -> None:
        self.options = options

    def prepare(self, model: Any, example: torch.Tensor, checkpoint: Path | None = None) -> Any:
        if example.is_cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.options.tf32
            torch.backends.cudnn.allow_tf32 = self.options.tf32
        return model
