"""Head ``cpsam``: Cellpose-SAM's readout, a 1x1 convolution to 3 x 8 x 8 values per token and a fixed
transposed convolution (``W2``, the identity: a pixel shuffle) back to pixels, reordered from cellpose's
``[dY, dX, cellprob]`` to vista2d's ``[cellprob, dY, dX]`` (flows x5 in both)."""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from torch import nn


@attrs.define
class CpsamHeadOptions:
    """Options of the ``cpsam`` head: ``patch_size`` of the backbone (8 for Cellpose-SAM)."""

    patch_size: int = attrs.field(default=8, validator=v.ge(1))


class CpsamHead(nn.Module):
    """(B, C, h, w) features -> (B, 3, 8h, 8w) logits ``[cellprob, dY, dX]``.

    Its keys are cellpose's own: ``out.*`` (trained), ``W2`` (fixed), ``diam_labels`` and ``diam_mean``
    (cellpose's stored object diameters, kept so a file converts back unchanged; not used).
    """

    Options = CpsamHeadOptions

    def __init__(self, options: CpsamHeadOptions, in_channels: int = 256) -> None:
        super().__init__()
        ps = options.patch_size
        self.options = options
        self.out = nn.Conv2d(in_channels, 3 * ps * ps, kernel_size=1)
        self.W2 = nn.Parameter(torch.eye(3 * ps * ps).reshape(3 * ps * ps, 3, ps, ps), requires_grad=False)
        self.diam_labels = nn.Parameter(torch.tensor([30.0]), requires_grad=False)
        self.diam_mean = nn.Parameter(torch.tensor([30.0]), requires_grad=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.conv_transpose2d(self.out(features), self.W2, stride=self.options.patch_size)
        return x[:, (2, 0, 1)]
