"""Runtime ``tensorrt``: a Torch-TensorRT engine (fp32/TF32 or fp16), built once and cached on disk.

The compiled module is saved with ``torch_tensorrt.save`` next to the checkpoint (or in ``cache_dir``)
under a name keyed by :func:`cache_key` (checkpoint sha256, input shape and batch range, precision,
torch / torch-tensorrt / TensorRT versions), so a change to any of them builds a new engine. Only this
module imports ``torch_tensorrt``, and only in :meth:`TensorRTRuntime.prepare`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from attrs import validators as v

from vista2d_core.errors import UserError
from vista2d_core.files import atomic_path
from vista2d_core.interfaces import Runtime

log = logging.getLogger("vista2d")
INSTALL_HINT = 'pip install "vista2d[tensorrt]" on a machine with an NVIDIA GPU and CUDA'


@attrs.define
class TensorRTOptions:
    """``precision``: "fp16" (fastest) or "fp32" (TensorRT may use TF32); ``opt_batch``/``max_batch``: the
    engine's batch range is 1..max_batch, tuned for opt_batch (default: the example's batch);
    ``cache_dir``: where engines go when there is no checkpoint or its folder is read-only
    (default ``~/.cache/vista2d/tensorrt``)."""

    precision: Literal["fp32", "fp16"] = "fp16"
    opt_batch: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    max_batch: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    cache_dir: Path | None = None


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered in this process while its size and mtime stay the same."""
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes, values): the key when there is no checkpoint."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions that make an engine unusable when they change: torch, torch-tensorrt, TensorRT."""
    found = {"torch": torch.__version__}
    for dist in ("torch-tensorrt", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def cache_key(
    weights_hash: str, shape: tuple[int, ...], batch_range: tuple[int, int, int], precision: str,
    versions: dict[str, str], device_name: str = "",
) -> str:
    """Hex sha256 naming one engine: weights hash, input (C, H, W), (min, opt, max) batch, precision,
    library versions and GPU model; any change gives a different key."""
    fields = {
        "weights": weights_hash, "shape": list(shape), "batch": list(batch_range),
        "precision": precision, "versions": dict(sorted(versions.items())), "device": device_name,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _import_torch_tensorrt() -> Any:
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise UserError(f"runtime tensorrt needs torch-tensorrt ({exc}): {INSTALL_HINT}") from None
    return torch_tensorrt


class TensorRTRuntime(Runtime):
    """Torch-TensorRT engine (fp32 or fp16, dynamic batch), cached on disk by weights/shape/versions."""

    Options = TensorRTOptions
    can_train = False

    def __init__(self, options: TensorRTOptions) -> None:
        self.options = options

    def engine_path(self, key: str, checkpoint: Path | None) -> Path:
        """Where the engine of ``key`` lives: beside a writable checkpoint, else in the cache folder."""
        if checkpoint is not None and os.access(checkpoint.parent, os.W_OK):
            return checkpoint.parent / f"{checkpoint.stem}.trt-{key[:16]}.ep"
        folder = self.options.cache_dir or Path.home() / ".cache" / "vista2d" / "tensorrt"
        return folder / f"model.trt-{key[:16]}.ep"

    def prepare(self, model: Any, example: torch.Tensor, checkpoint: Path | None = None) -> Any:
        """Load the cached engine for this model/shape/precision or build and save it; returns
        ``(B, 3, H, W) float32 -> float32 logits`` for any B (batches above max_batch run in chunks)."""
        trt = _import_torch_tensorrt()
        if not (torch.cuda.is_available() and example.is_cuda):
            raise UserError(f"runtime tensorrt needs a CUDA GPU and device = \"cuda\" (none is used here): {INSTALL_HINT}")
        o = self.options
        opt = o.opt_batch or example.shape[0]
        top = max(o.max_batch or opt, opt)
        dtype = torch.float16 if o.precision == "fp16" else torch.float32
        shape = tuple(example.shape[1:])
        weights = file_sha256(checkpoint) if checkpoint is not None else weights_sha256(model)
        key = cache_key(weights, shape, (1, opt, top), o.precision, versions(), torch.cuda.get_device_name(example.device))
        path = self.engine_path(key, checkpoint)
        if path.is_file():
            log.info("runtime tensorrt: loading the cached engine %s", path)
            engine = trt.load(str(path)).module()
        else:
            engine = self._build(trt, model, example, dtype, (1, opt, top), path)

        def predict(images: torch.Tensor) -> torch.Tensor:
            parts = [engine(chunk.to(dtype)) for chunk in images.split(top)]
            return torch.cat(parts).float()

        return predict

    def _build(self, trt: Any, model: Any, example: torch.Tensor, dtype: torch.dtype,
               batch: tuple[int, int, int], path: Path) -> Any:
        """Compile with torch_tensorrt (dynamo IR, dynamic batch) and save atomically to ``path``."""
        log.info("runtime tensorrt: building a %s engine for batch %d..%d (minutes); cache %s",
                 self.options.precision, batch[0], batch[2], path)
        net = copy.deepcopy(model).eval().to(dtype=dtype, device=example.device)  # fp16: weights in half
        spec = trt.Input(
            min_shape=(batch[0], *example.shape[1:]), opt_shape=(batch[1], *example.shape[1:]),
            max_shape=(batch[2], *example.shape[1:]), dtype=dtype,
        )
        engine = trt.compile(net, ir="dynamo", inputs=[spec], enabled_precisions={dtype})
        with atomic_path(path) as tmp:
            trt.save(engine, str(tmp), inputs=[spec])
        return engine
