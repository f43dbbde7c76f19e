"""Head ``vista2d``: the reference's upsampling head (replaces SAM's mask decoder)."""

from __future__ import annotations

import attrs
from torch import nn


@attrs.define
class HeadOptions:
    """Options of the ``vista2d`` head (it has none beyond its input width)."""


class Vista2DHead(nn.Sequential):
    """VISTA2D upsampling head: features (B, C, h, w) -> logits (B, 3, 4h, 4w) [cellprob, dY, dX].

    Exactly the reference layers (keys ``0..5``): BatchNorm, ReLU, ConvTranspose x2, BatchNorm, ReLU,
    ConvTranspose x2 to 3 channels.
    """

    Options = HeadOptions

    def __init__(self, options: HeadOptions, in_channels: int = 256) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(in_channels, 128, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 3, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True),
        )
        self.options = options
