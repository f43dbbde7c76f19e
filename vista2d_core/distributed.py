"""torch.distributed under torchrun: rank, world size, process-group set-up and teardown, input sharding.

Outside torchrun (no WORLD_SIZE in the environment) everything degrades to a single process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 logs, saves checkpoints and writes shared files."""
    return rank() == 0


def resolve_device(name: str):  # -> torch.device
    """``"auto"`` -> this rank's CUDA device when available, else CPU; other names as given."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def setup(device_name: str = "auto"):  # -> torch.device
    """Resolve the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU)."""
    import torch
    import torch.distributed as dist

    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    """Leave the process group :func:`setup` joined (a no-op when none was). Called at the end of every run:
    a gloo group left to the interpreter's exit can abort its rank there (SIGABRT, "terminate called without
    an active exception") after all the work is done, failing the whole torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (every ``world_size``-th item, starting at ``rank``)."""
    return list(items[rank() :: world_size()])


def broadcast_buffers(module: Any, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) of ``module`` to every rank, in place.
    DDP broadcasts them at the start of each forward, so after the last training step each rank still
    holds its own update; this makes them identical (a collective; a no-op in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def gather(values: Any) -> list[Any]:
    """Every rank's ``values`` in rank order: lists are concatenated, anything else is one entry per rank.
    A collective (all ranks must call it); without a process group, just this process's values."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values) if isinstance(values, list) else [values]
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, values)
    if isinstance(values, list):
        return [v for part in everything for v in part]
    return everything
