"""Runtime ``amp``: automatic mixed precision (``torch.autocast``), float32 outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import attrs
import torch

from vista2d_core.interfaces import Runtime

log = logging.getLogger("vista2d")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@attrs.define
class AmpOptions:
    """``dtype``: autocast precision. float16 trains with a GradScaler; on the CPU it runs as bfloat16
    (float16 CPU kernels are missing or slow there), with a warning."""

    dtype: Literal["float16", "bfloat16"] = "float16"


class AmpRuntime(Runtime):
    """Mixed precision with torch.autocast (float16 or bfloat16), float32 logits; trains."""

    Options = AmpOptions
    can_train = True

    def __init__(self, options: AmpOptions) -> None:
        self.options = options
        self._warned = False

    def dtype(self, device: torch.device) -> torch.dtype:
        """The autocast dtype used on ``device`` (float16 becomes bfloat16 on the CPU)."""
        if device.type == "cpu" and self.options.dtype == "float16":
            if not self._warned:
                log.warning("runtime amp: float16 autocast is slow or unsupported on the CPU; using bfloat16")
                self._warned = True
            return torch.bfloat16
        return _DTYPES[self.options.dtype]

    def autocast(self, device: torch.device) -> Any:
        return torch.autocast(device.type, dtype=self.dtype(device))

    def grad_scaler(self, device: torch.device) -> Any:
        """A GradScaler for float16 (bfloat16 has float32's range and needs none)."""
        return torch.amp.GradScaler(device.type) if self.dtype(device) == torch.float16 else None

    def prepare(self, model: Any, example: torch.Tensor, checkpoint: Path | None = None) -> Any:
        """``x -> model(x)`` under autocast, cast to float32."""
        device_type, dtype = example.device.type, self.dtype(example.device)

        def predict(images: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type, dtype=dtype):
                return model(images).float()

        return predict
