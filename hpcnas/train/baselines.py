"""The hand-designed baseline: a ResNet-UNet (paper section 5), width and depth configurable."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hpcnas.space.blocks import BasicBlock, conv_bn_relu


class ResNetUNet(nn.Module):
    """U-Net whose encoder stages are ResNet blocks; ``depth`` stages halve the resolution.

    ``width`` may be fractional: stage ``k`` then has ``round(width * 2**k)`` channels, which lets a
    parameter budget be met closely at small sizes, where one channel more is a large step.
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 32, depth: int = 3, blocks: int = 2):
        super().__init__()
        widths = [max(1, round(width * 2**level)) for level in range(depth + 1)]
        width = widths[0]
        self.stem = nn.Sequential(conv_bn_relu(in_channels, width), BasicBlock(width, width))
        self.down = nn.ModuleList(
            nn.Sequential(
                BasicBlock(widths[level - 1], widths[level], stride=2),
                *[BasicBlock(widths[level], widths[level]) for _ in range(blocks - 1)],
            )
            for level in range(1, depth + 1)
        )
        self.up = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(widths[level + 1] + widths[level], widths[level]),
                conv_bn_relu(widths[level], widths[level]),
            )
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        d = skips[-1]
        for level, block in zip(reversed(range(len(self.down))), self.up):
            d = F.interpolate(d, size=skips[level].shape[-2:], mode="bilinear", align_corners=False)
            d = block(torch.cat([d, skips[level]], dim=1))
        return self.head(d)
