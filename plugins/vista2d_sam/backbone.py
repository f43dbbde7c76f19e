"""Backbone ``sam``: a segment-anything ViT image encoder (prompt encoder and mask decoder dropped).

The module *is* ``segment_anything``'s ``ImageEncoderViT``, so its state-dict keys are SAM's
``image_encoder.*`` keys (the official VISTA2D checkpoint stores them under ``model.image_encoder.``).
SAM's pixel mean/std normalisation is not applied: inputs are in [0, 1], as in the reference.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from vista2d_core.errors import UserError


@attrs.frozen
class Variant:
    """Hyper-parameters of one encoder size (img_size: the grid its positional embeddings are for)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    patch_size: int = 16
    img_size: int = 1024
    window_size: int = 14


VARIANTS = {
    "vit_b": Variant(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": Variant(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": Variant(1280, 32, 16, (7, 15, 23, 31)),
    # Small CPU variant: 3.9 M parameters (with the head), native 256 px tiles with 8 px patches.
    "vit_t": Variant(192, 6, 3, (2, 5), patch_size=8, img_size=256, window_size=8),
}


@attrs.define
class SamOptions:
    """Options of the ``sam`` backbone."""

    variant: Literal["vit_b", "vit_l", "vit_h", "vit_t"] = "vit_b"
    weights: Path | None = attrs.field(default=None, metadata={"must_exist": True, "model_name": True})
    resize_to: int | None = attrs.field(default=None, validator=v.optional(v.ge(0)))
    patch_size: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    stem: Literal["patch", "conv"] = "patch"
    mlp_ratio: float = attrs.field(default=4.0, validator=v.gt(0))
    neck_channels: int = attrs.field(default=256, validator=v.ge(1))
    freeze: bool = False


class SamBackbone(ImageEncoderViT):
    """SAM ViT image encoder (vit_b, vit_l, vit_h, small vit_t); inputs in [0, 1], output stride = patch size.

    ``resize_to``: every input is resized bilinearly to this square size first (the variant's native
    size when unset: 1024 for SAM variants, as the reference; 0 = never resize, positional embeddings
    are interpolated to the input's grid instead). ``weights``: an original SAM ``.pth`` (or a bare
    encoder state dict), or a model name: ``"sam_vit_b"``, ``"sam_vit_l"``, ``"sam_vit_h"``. ``stem``: ``"patch"`` (SAM's patch embedding) or ``"conv"`` (a small convolutional
    stem, :class:`ConvStem`: trains faster from scratch, but SAM weights do not exist for it).
    ``mlp_ratio`` (SAM: 4) and ``neck_channels`` (SAM: 256, the head's input width, ``out_channels``):
    narrower for a cheaper network trained from scratch.
    ``freeze``: no gradients for the encoder.
    """

    Options = SamOptions
    out_channels = 256

    def __init__(self, options: SamOptions) -> None:
        spec = VARIANTS[options.variant]
        patch = options.patch_size or spec.patch_size
        super().__init__(
            img_size=spec.img_size,
            patch_size=patch,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=options.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.global_attn_indexes,
            window_size=spec.window_size,
            out_chans=options.neck_channels,
        )
        self.out_channels = options.neck_channels
        if options.stem == "conv":
            if options.weights is not None:
                raise UserError("backbone.stem = 'conv' has no SAM weights: drop backbone.weights or use stem = 'patch'")
            self.patch_embed = ConvStem(patch, spec.embed_dim)
        self.options = options
        self.resize_to = spec.img_size if options.resize_to is None else options.resize_to
        self.stride = patch
        if options.weights is not None:
            load_sam_weights(self, options.weights)
        if options.freeze:
            self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 256, S/p, S/p) with S = resize_to (or H, W when 0)."""
        size = self.resize_to
        if size and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear")
        x = self.patch_embed(images)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if pos.shape[1:3] != x.shape[1:3]:
                pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic")
                pos = pos.permute(0, 2, 3, 1)
            x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


class ConvStem(nn.Sequential):
    """Convolutional stem in place of the patch embedding ("Early convolutions help transformers see better",
    Xiao et al. 2021): stride-2 3x3 convolutions with BatchNorm + ReLU down to the patch size, then a 1x1
    projection; (B, 3, H, W) -> (B, H/p, W/p, embed_dim) like SAM's PatchEmbed."""

    def __init__(self, patch: int, embed_dim: int) -> None:
        steps = patch.bit_length() - 1
        if patch != 1 << steps:
            raise UserError(f"backbone.stem = 'conv' needs a power-of-two patch_size, got {patch}")
        layers: list[nn.Module] = []
        channels = 3
        for i in range(steps):
            out = embed_dim // (2 ** (steps - i))
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        super().__init__(*layers, nn.Conv2d(channels, embed_dim, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images).permute(0, 2, 3, 1)


def load_sam_weights(encoder: torch.nn.Module, path: Path) -> None:
    """Load an original SAM checkpoint (keys ``image_encoder.*``; others ignored) or a bare encoder
    state dict into ``encoder``, strictly; a mismatch names the missing and unexpected keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many types for a broken file)
        raise UserError(f"{path}: cannot load SAM weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a SAM state dict")
    prefix = "image_encoder."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: t for k, t in state.items() if k.startswith(prefix)}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise UserError(
            f"{path}: SAM weights do not fit this encoder: missing {_few(missing)}; unexpected {_few(unexpected)}; "
            f"wrong shape {_few(wrong)} (are backbone.variant, mlp_ratio and neck_channels right? SAM: 4 and 256)"
        )
    encoder.load_state_dict(state)


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
