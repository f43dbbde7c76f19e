"""Runtime ``eager``: plain PyTorch in float32 (optionally TF32 on CUDA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from vista2d_core.interfaces import Runtime


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TensorFloat-32 in CUDA matmuls and convolutions, process-wide."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; mixing it with allow_tf32 is an error there
        matmul.fp32_precision = conv.conv.fp32_precision = "tf32" if enabled else "ieee"
    else:
        matmul.allow_tf32 = conv.allow_tf32 = enabled


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
        """The model itself; on CUDA, TF32 is switched on or off process-wide as ``tf32`` says."""
        if example.is_cuda:
            set_tf32(self.options.tf32)
        return model
