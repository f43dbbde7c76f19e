"""Backbone ``cpsam``: cellpose 4's Cellpose-SAM encoder, a SAM ViT with 8-px patches and global attention.

Built as ``cellpose.vit.CPSAM`` builds it: SAM's ``ImageEncoderViT`` in its 1024-px layout (16-px patches,
14-px windows, global attention in every (depth/4)-th block), then the patch embedding made 8 x 8 px, the
positional embeddings cut to the native tile's grid (256 px / 8 = 32 x 32) and every block's attention made
global (the relative-position tables keep their shapes and are interpolated, as in cellpose). The state-dict
keys are therefore cellpose's ``encoder.*`` keys without the prefix. Attention runs fused
(:class:`FusedAttention`): the same results to float rounding, faster.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn

from vista2d_core.errors import UserError

from .weights import adopt_checkpoint


@attrs.define
class CpsamOptions:
    """Options of the ``cpsam`` backbone (defaults: Cellpose-SAM's ViT-L)."""

    embed_dim: int = attrs.field(default=1024, validator=v.ge(1))
    depth: int = attrs.field(default=24, validator=v.ge(1))
    num_heads: int = attrs.field(default=16, validator=v.ge(1))
    patch_size: int = attrs.field(default=8, validator=v.ge(1))
    tile: int = attrs.field(default=256, validator=v.ge(1))
    layer_drop: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])
    freeze: bool = False


class FusedAttention(Attention):
    """SAM's global attention with its decomposed relative-position bias, computed by one fused
    ``scaled_dot_product_attention`` call (the bias passed as its mask) instead of a matmul, two additions and a
    softmax over the whole attention matrix: the same parameters and results (to float rounding, ~1e-7), about
    1.4x faster per attention layer on CPUs. Global attention only (``window_size`` 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, H * W, head_dim)
        r_q = q.reshape(B, self.num_heads, H, W, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(H, H, self.rel_pos_h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(W, W, self.rel_pos_w))
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, self.num_heads, H * W, H * W)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1))


def global_blocks(depth: int) -> tuple[int, ...]:
    """The blocks SAM gives global attention (and 64 x 64 relative-position tables): every (depth/4)-th."""
    return tuple(sorted({(i + 1) * depth // 4 - 1 for i in range(4)} - {-1}))


class CpsamBackbone(ImageEncoderViT):
    """Cellpose-SAM's image encoder: (B, 3, H, W) in cellpose's normalisation -> (B, 256, H/8, W/8).

    ``tile``: the native input size the positional embeddings are for (other sizes interpolate them).
    ``layer_drop``: in training, block i of n is skipped per sample with probability
    ``layer_drop * i / (n - 1)`` (cellpose's ``rdrop``, 0.4 in its own training). ``freeze``: no gradients.
    ``embed_dim``, ``depth``, ``num_heads``: the ViT's size (smaller ones for tests and experiments; cellpose's
    files are ViT-L).
    """

    Options = CpsamOptions
    out_channels = 256

    def __init__(self, options: CpsamOptions) -> None:
        if options.embed_dim % options.num_heads:
            raise UserError(f"backbone.embed_dim ({options.embed_dim}) must be a multiple of backbone.num_heads "
                            f"({options.num_heads})")
        super().__init__(
            img_size=1024,
            patch_size=16,
            embed_dim=options.embed_dim,
            depth=options.depth,
            num_heads=options.num_heads,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_blocks(options.depth),
            window_size=14,
            out_chans=self.out_channels,
        )
        ps, grid = options.patch_size, options.tile // options.patch_size
        self.patch_embed.proj = nn.Conv2d(3, options.embed_dim, kernel_size=ps, stride=ps)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, options.embed_dim))
        for block in self.blocks:
            block.window_size = 0
            block.attn.__class__ = FusedAttention  # same module and parameters, fused forward
        self.options = options
        self.stride = ps
        if options.freeze:
            self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        pos = self.pos_embed
        if pos.shape[1:3] != x.shape[1:3]:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic").permute(0, 2, 3, 1)
        x = x + pos
        drop = self.options.layer_drop
        if self.training and drop > 0:
            n = len(self.blocks)
            skip = (torch.rand((len(x), n), device=x.device) < torch.linspace(0, drop, n, device=x.device)).to(x.dtype)
            for i, block in enumerate(self.blocks):
                mask = skip[:, i, None, None, None]
                x = x * mask + block(x) * (1 - mask)
        else:
            for block in self.blocks:
                x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))

    @classmethod
    def adopt_checkpoint(cls, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """A cellpose 4 weight file's state dict -> (the same in vista2d's layout, the settings that segment
        as cellpose does); None for other files. See :func:`vista2d_cpsam.weights.adopt_checkpoint`."""
        return adopt_checkpoint(state)
