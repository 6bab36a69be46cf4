"""The ResNet-UNet's blocks, and the ResNet-UNet whose blocks are choice points (the ``resnet_unet`` space).

The paper's proposal (section 6): keep the well-designed network and search only a part of it.  The
hand-designed ResNet-UNet (:class:`hpcnas.train.baselines.ResNetUNet`) has, at each level, a stage of two ResNet
blocks (the first one strided), a skip connection, and a decoder stage of two conv-BN-ReLU.  Here the second
block of each encoder stage, each skip, and the second conv of each decoder stage are choice points: a block
cell (:class:`BlockCell`) holding one op of ``O_blocks`` (a discrete network) or a mixed op over all of them (a
supernet).  With every choice at its hand-designed op the network is the baseline's, at an integer width.

Every block variant maps C to C channels at stride 1, so a mixed op can sum them; the width multiplier ``w``
scales the block's inner channels only.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hpcnas.space.cells import CellArch, Edge, GraphCell
from hpcnas.space.networks import cell_archs
from hpcnas.space.topology import CELL_KINDS


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


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, affine: bool = True) -> nn.Sequential:
    """The ResNet-UNet's decoder conv: k x k convolution, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out, affine=affine),
        nn.ReLU(inplace=True),
    )


# --------------------------------------------------------------------------
# the block variants of O_blocks: builders (channels, stride, affine, *settings), registered in topology.py


class Residual(nn.Module):
    """``relu(body(x) + x)``: the shape of every residual block variant."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


def _conv_bn(c_in: int, c_out: int, kernel: int, affine: bool, dilation: int = 1, groups: int = 1) -> List[nn.Module]:
    pad = dilation * (kernel - 1) // 2
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, affine=affine),
    ]


def _inner(c: int, width: float) -> int:
    return max(1, round(width * c))


def _stride_one(stride: int) -> None:
    if stride != 1:
        raise ValueError(f"block ops keep the resolution (stride 1), not stride {stride}")


def identity(c: int, stride: int, affine: bool) -> nn.Module:
    """The skip connection as it is: the hand-designed skip."""
    _stride_one(stride)
    return nn.Identity()


def plain(c: int, stride: int, affine: bool, kernel: int) -> nn.Module:
    """One conv-BN-ReLU: the hand-designed decoder conv at ``kernel`` 3."""
    _stride_one(stride)
    return conv_bn_relu(c, c, kernel, affine)


def basic(c: int, stride: int, affine: bool, kernel: int, width: float, dilation: int = 1) -> nn.Module:
    """ResNet basic block, k x k, inner width ``width * c``: the hand-designed encoder block at k 3, w 1."""
    _stride_one(stride)
    m = _inner(c, width)
    body = _conv_bn(c, m, kernel, affine, dilation) + [nn.ReLU()] + _conv_bn(m, c, kernel, affine, dilation)
    return Residual(nn.Sequential(*body))


def dilated(c: int, stride: int, affine: bool, kernel: int, width: float) -> nn.Module:
    """The basic block with dilation 2: a wider view at the same cost."""
    return basic(c, stride, affine, kernel, width, dilation=2)


def bottleneck(c: int, stride: int, affine: bool, kernel: int, width: float) -> nn.Module:
    """ResNet bottleneck: 1x1 down to ``width * c / 2``, k x k, 1x1 back up."""
    _stride_one(stride)
    m = _inner(c, width / 2)
    body = _conv_bn(c, m, 1, affine) + [nn.ReLU()] + _conv_bn(m, m, kernel, affine) + [nn.ReLU()]
    return Residual(nn.Sequential(*body, *_conv_bn(m, c, 1, affine)))


def separable(c: int, stride: int, affine: bool, kernel: int, width: float) -> nn.Module:
    """Inverted residual (MobileNetV2, the IR-NAS row): 1x1 to ``width * c``, depthwise k x k, 1x1 back."""
    _stride_one(stride)
    m = _inner(c, width)
    body = _conv_bn(c, m, 1, affine) + [nn.ReLU()] + _conv_bn(m, m, kernel, affine, groups=m) + [nn.ReLU()]
    return Residual(nn.Sequential(*body, *_conv_bn(m, c, 1, affine)))


# --------------------------------------------------------------------------
# the network


class BlockCell(GraphCell):
    """A choice point: one edge from the block's input (a single op, or a mixed op in a supernet)."""

    kind = CELL_KINDS["block"]

    def forward(self, inputs: Sequence[torch.Tensor], arch: Optional[CellArch] = None) -> torch.Tensor:
        return self.run_nodes([inputs[0]], arch)[-1]

    @classmethod
    def build(cls, edges: List[List[Edge]], in_channels, c, reduction, reduce_prev, affine) -> "BlockCell":
        return cls(edges, c)


class ResNetUNetOfChoices(nn.Module):
    """The ResNet-UNet (stage k has ``channels * 2**k`` channels) with its choice points as block cells.

    ``factory(group, level, in_channels, c)`` builds each choice point: ``"encoder"`` after the strided block
    of stage 1..depth, ``"skip"`` on the skip of level 0..depth-1, ``"decoder"`` after the decoder conv that
    fuses the upsampled feature with the skip at level 0..depth-1.
    """

    def __init__(self, factory, in_channels: int, num_classes: int, channels: int, depth: int, arch=None):
        super().__init__()
        self.arch = arch
        widths = [channels * 2**level for level in range(depth + 1)]
        self.stem = nn.Sequential(conv_bn_relu(in_channels, widths[0]), BasicBlock(widths[0], widths[0]))
        # built in the baseline's order (each stage's strided block, then its second block; each decoder stage's
        # fuse, then its second conv), so that with the hand-designed choices and one seed both draw equal weights
        self.down, self.encoder = nn.ModuleList(), nn.ModuleList()
        for level in range(1, depth + 1):
            self.down.append(BasicBlock(widths[level - 1], widths[level], stride=2))
            self.encoder.append(factory("encoder", level, [widths[level]], widths[level]))
        self.skips = nn.ModuleList(factory("skip", level, [widths[level]], widths[level]) for level in range(depth))
        self.fuse, self.decoder = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(depth)):
            self.fuse.append(conv_bn_relu(widths[level + 1] + widths[level], widths[level]))
            self.decoder.append(factory("decoder", level, [widths[level]], widths[level]))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = cell_archs(self.arch)
        features = [self.stem(x)]
        for down, cell in zip(self.down, self.encoder):
            features.append(cell([down(features[-1])], arch(cell)))
        d = features[-1]
        for level, fuse, cell in zip(reversed(range(len(self.down))), self.fuse, self.decoder):
            skip = self.skips[level]
            d = F.interpolate(d, size=features[level].shape[-2:], mode="bilinear", align_corners=False)
            d = cell([fuse(torch.cat([d, skip([features[level]], arch(skip))], dim=1))], arch(cell))
        return self.head(d)
