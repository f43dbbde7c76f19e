"""The network (backbone + head) and its checkpoints, in the official VISTA2D layout.

State-dict keys are ``model.image_encoder.*`` (backbone) and ``model.mask_decoder.*`` (head), as in
MONAI's ``CellSamWrapper``; a checkpoint file is ``{"state_dict", "config", "epoch", "best_metric"}``,
so ours load into the MONAI bundle and the official ``model.pt`` loads here. Ours also carry ``"inference"``,
the settings read back by :func:`vista2d_core.recipe.settings_from_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .files import atomic_path

if TYPE_CHECKING:
    from .recipe import Model


class Vista2DNet(nn.Module):
    """backbone -> head -> bilinear resize to the input size. Input (B, 3, H, W) in [0, 1];
    output logits (B, 3, H, W) = [cellprob logit, dY, dX] (flows x5)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model = nn.Module()  # the submodule name that gives the official key prefix
        self.model.image_encoder = backbone
        self.model.mask_decoder = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        logits = self.model.mask_decoder(self.model.image_encoder(images))
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear")
        return logits


def build_model(spec: Model) -> Vista2DNet:
    """Build the network a recipe's ``[model]`` describes, loading ``spec.checkpoint`` when set."""
    backbone = spec.backbone.create()
    head = spec.head.create(backbone.out_channels)
    net = Vista2DNet(backbone, head)
    if spec.checkpoint is not None:
        load_checkpoint(net, spec.checkpoint)
    return net


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the prefixes DDP (``module.``) and torch.compile (``_orig_mod.``) add to keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.replace(prefix, "")
        out[key] = value
    return out


def read_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``); a bare state dict is wrapped. ``mmap``: map
    the tensors instead of reading them (cheap when only the config is wanted)."""
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:  # mmap needs the zip format: legacy files are read whole
            if not mmap:
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # noqa: BLE001 (torch raises many types for broken or unsafe files)
        first = (str(exc).strip().splitlines() or [""])[0]  # torch's unpickling errors run to a dozen lines
        raise UserError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a checkpoint (expected a dict with 'state_dict')")
    if "state_dict" not in data:
        data = {"state_dict": data}
    return data


def load_checkpoint(net: nn.Module, path: Path) -> dict[str, Any]:
    """Load weights into ``net`` with strict key checking; return the checkpoint's other entries. A state
    dict in another project's layout is first renamed by the backbone's ``adopt_checkpoint`` (if it has one).

    A mismatch raises UserError listing missing and unexpected keys (and wrong shapes).
    """
    data = read_checkpoint(path)
    state = clean_state_dict(data["state_dict"])
    if not any(key.startswith("model.") for key in state):
        adopted = adopt_checkpoint(type(net.model.image_encoder), state)
        state = adopted[0] if adopted else state
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise UserError(
            f"{path}: checkpoint does not fit the model: missing keys {_few(missing)}; unexpected keys "
            f"{_few(unexpected)}; wrong shapes {_few(wrong)} (check model.backbone and model.head)"
        )
    net.load_state_dict(state)
    return {k: v for k, v in data.items() if k != "state_dict"}


def adopt_checkpoint(backbone: type, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``backbone.adopt_checkpoint(state)`` when the backbone class has one (a family whose files come in
    another layout, see :class:`~vista2d_core.interfaces.Backbone`), else None."""
    adopt = getattr(backbone, "adopt_checkpoint", None)
    return adopt(state) if adopt is not None else None


def save_checkpoint(net: nn.Module, path: Path, **extra: Any) -> Path:
    """Write ``{"state_dict", **extra}`` atomically (temporary file, then rename); return ``path``."""
    module = getattr(net, "module", net)  # unwrap DDP
    state = clean_state_dict(module.state_dict())
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **extra}, tmp)
    return path


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
