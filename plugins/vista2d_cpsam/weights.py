"""Cellpose 4's weight files (``torch.save(CPSAM.state_dict())``: ``encoder.*``, ``out.*``, ``W2``,
``diam_labels``, ``diam_mean``) read as they are, and the settings that segment as cellpose does.

The core calls the backbone's ``adopt_checkpoint`` for a checkpoint that is not in vista2d's layout: the
keys are renamed (``encoder.`` -> the backbone, the rest -> the head) and checked strictly by the core,
which lists missing and unexpected keys; the network's size is read from the tensors' shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BACKBONE = "model.image_encoder."
HEAD = "model.mask_decoder."
_HEAD_KEYS = ("out.", "W2", "diam_labels", "diam_mean")


def eval_settings(backbone: dict[str, Any] | None = None, patch_size: int = 8) -> dict[str, Any]:
    """Recipe tables that segment as ``CellposeModel.eval`` does by default: percentile normalisation per
    channel, 256-px tiles with ``tile_overlap`` 0.1 blended by cellpose's taper, 8 tiles a batch, no flips,
    cellpose's dynamics (cellprob 0.0, flow 0.4, min_size 15, niter 200, max_size_fraction 0.4);
    ``backbone``: options of the ``cpsam`` backbone beyond the defaults (ViT-L)."""
    return {
        "model": {
            "backbone": {"name": "cpsam", **(backbone or {})},
            "head": {"name": "cpsam", "patch_size": patch_size},
            "diameter": 30.0,
        },
        "data": {"normalize": "cellpose", "percentiles": [1.0, 99.0]},
        "infer": {
            "roi_size": [256, 256],
            "overlap": 0.1,
            "blend": "cellpose",
            "sw_batch_size": 8,
            "tta": False,
            "postprocessor": {"name": "cellpose_fast", "cellprob_threshold": 0.0, "flow_threshold": 0.4,
                              "min_size": 15, "niter": 200, "max_size_fraction": 0.4},
        },
    }


def is_cellpose_state(state: dict[str, Any]) -> bool:
    """Whether ``state`` is a Cellpose-SAM state dict (cellpose 4: ``W2`` and ``encoder.*`` keys, no DINO
    ``encoder.cls_token``)."""
    return "W2" in state and "encoder.patch_embed.proj.weight" in state and "encoder.cls_token" not in state


def adopt_checkpoint(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A cellpose 4 Cellpose-SAM state dict -> (the state in vista2d's layout, :func:`eval_settings` for the
    network's size); None when ``state`` is not one. Keys that are neither encoder nor head keys are kept as
    they are, for the core's strict check to report."""
    if not is_cellpose_state(state):
        return None
    out = {}
    for key, tensor in state.items():
        if key.startswith("encoder."):
            out[BACKBONE + key[len("encoder."):]] = tensor
        elif key.startswith(_HEAD_KEYS):
            out[HEAD + key] = tensor
        else:
            out[key] = tensor
    proj = state["encoder.patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})
    head_dim = int(state["encoder.blocks.0.attn.rel_pos_h"].shape[-1]) if depth else embed_dim
    backbone: dict[str, Any] = {"embed_dim": embed_dim, "depth": depth, "num_heads": embed_dim // head_dim,
                                "patch_size": patch}
    if "encoder.pos_embed" in state:
        backbone["tile"] = int(state["encoder.pos_embed"].shape[1]) * patch
    return out, eval_settings(backbone, patch)


def to_cellpose(state: dict[str, Any]) -> dict[str, Any]:
    """A vista2d state dict of a ``cpsam`` network -> cellpose's layout (what ``CPSAM.load_model`` reads)."""
    out = {}
    for key, tensor in state.items():
        if key.startswith(BACKBONE):
            out["encoder." + key[len(BACKBONE):]] = tensor
        elif key.startswith(HEAD):
            out[key[len(HEAD):]] = tensor
    return out


def save_cellpose(checkpoint: Path, output: Path) -> Path:
    """Write the ``cpsam`` network of a vista2d ``checkpoint`` (a finetuned one) as a cellpose 4 weight file
    (``CellposeModel(pretrained_model=output)`` reads it), atomically; return ``output``."""
    import torch

    from vista2d_core.errors import UserError
    from vista2d_core.files import atomic_path

    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many types for a missing or broken file)
        raise UserError(f"{checkpoint}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    state = to_cellpose(data.get("state_dict", data) if isinstance(data, dict) else {})
    if "W2" not in state:
        raise UserError(f"{checkpoint}: not a vista2d checkpoint of a cpsam network (no head key W2)")
    with atomic_path(Path(output)) as tmp:
        torch.save(state, tmp)
    return Path(output)
