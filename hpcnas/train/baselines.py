"""The hand-designed baseline: a ResNet-UNet (paper section 5), width and depth configurable."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, ReLU, projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ResNetUNet(nn.Module):
    """U-Net whose encoder stages are ResNet blocks; ``depth`` stages halve the resolution.

    ``width`` may be fractional: stage ``k`` then has ``round(width * 2**k)`` channels, which lets a
    parameter budget be met closely at small sizes, where one channel more is a large step.
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 32, depth: int = 3, blocks: int = 2):
        super().__init__()
        widths = [max(1, round(width * 2**level)) for level in range(depth + 1)]
        width = widths[0]
        self.stem = nn.Sequential(_conv_bn_relu(in_channels, width), BasicBlock(width, width))
        self.down = nn.ModuleList(
            nn.Sequential(
                BasicBlock(widths[level - 1], widths[level], stride=2),
                *[BasicBlock(widths[level], widths[level]) for _ in range(blocks - 1)],
            )
            for level in range(1, depth + 1)
        )
        self.up = nn.ModuleList(
            nn.Sequential(
                _conv_bn_relu(widths[level + 1] + widths[level], widths[level]),
                _conv_bn_relu(widths[level], widths[level]),
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
