"""Candidate operations, by the names genotypes store.

Conventions follow the DARTS reference code: ReLU-Conv-BN, separable
convolutions applied twice, a factorized reduce for a strided skip, and a
zero op that returns zeros of the right shape.  Every op maps C channels to C
channels with stride 1 or 2.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn


class ReLUConvBN(nn.Sequential):
    """ReLU, one convolution (any kernel shape, stride, dilation, groups), BatchNorm."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel,
        stride: int = 1,
        padding=0,
        dilation: int = 1,
        groups: int = 1,
        affine: bool = True,
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False
            ),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise dilated k x k, pointwise 1x1, BatchNorm."""

    def __init__(self, c: int, k: int, stride: int, dilation: int, affine: bool):
        pad = dilation * (k - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, stride=stride, padding=pad, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class SepConv(nn.Sequential):
    """A depthwise-separable convolution applied twice (the first one strided)."""

    def __init__(self, c: int, k: int, stride: int, affine: bool):
        super().__init__(DilConv(c, k, stride, 1, affine), DilConv(c, k, 1, 1, affine))


class SplitConv(nn.Sequential):
    """Spatially separable: ReLU, k x 1 then 1 x k convolution, BatchNorm."""

    def __init__(self, c: int, k: int, stride: int, affine: bool):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, (k, 1), stride=(stride, 1), padding=(k // 2, 0), bias=False),
            nn.Conv2d(c, c, (1, k), stride=(1, stride), padding=(0, k // 2), bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class Zero(nn.Module):
    """The ``none`` / ``cut`` op: zeros of the output shape (keeps the graph connected)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset strided 1x1 convolutions (DARTS)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # the shifted input is a view: padding it (a copy, saved for backward) would cost a second input per edge
        even, odd = self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])
        if odd.shape[-2:] != even.shape[-2:]:  # an odd side: the zero row/column a padded input would add
            odd = nn.functional.pad(odd, (0, even.shape[-1] - odd.shape[-1], 0, even.shape[-2] - odd.shape[-2]))
        return self.bn(torch.cat([even, odd], dim=1))


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


def _pool(kind: str) -> Callable[[int, int, bool], nn.Module]:
    def make(c: int, stride: int, affine: bool) -> nn.Module:
        if kind == "avg":
            return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        return nn.MaxPool2d(3, stride=stride, padding=1)

    return make


OPS: Dict[str, Callable[[int, int, bool], nn.Module]] = {
    # O_base (DARTS / PC-DARTS)
    "none": lambda c, s, a: Zero(s),
    "avg_pool_3x3": _pool("avg"),
    "max_pool_3x3": _pool("max"),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, s, a: SepConv(c, 3, s, a),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, 5, s, a),
    "dil_conv_3x3": lambda c, s, a: DilConv(c, 3, s, 2, a),
    "dil_conv_5x5": lambda c, s, a: DilConv(c, 5, s, 2, a),
    # O_large (the paper's)
    "conv2d_1": lambda c, s, a: ReLUConvBN(c, c, 3, s, 1, affine=a),
    "conv2d_2": lambda c, s, a: ReLUConvBN(c, c, 5, s, 2, affine=a),
    "conv2d_3": lambda c, s, a: ReLUConvBN(c, c, 7, s, 3, affine=a),
    "depthconv2d_1": lambda c, s, a: ReLUConvBN(c, c, 3, s, 1, groups=c, affine=a),
    "depthconv2d_2": lambda c, s, a: ReLUConvBN(c, c, 5, s, 2, groups=c, affine=a),
    "depthconv2d_3": lambda c, s, a: ReLUConvBN(c, c, 7, s, 3, groups=c, affine=a),
    "splitconv2d_1": lambda c, s, a: SplitConv(c, 3, s, a),
    "splitconv2d_2": lambda c, s, a: SplitConv(c, 5, s, a),
    "splitconv2d_3": lambda c, s, a: SplitConv(c, 7, s, a),
    "skip": _skip,
    "cut": lambda c, s, a: Zero(s),
}


def build_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Instantiate op ``name`` for ``channels`` channels and ``stride`` 1 or 2."""
    return OPS[name](channels, stride, affine)


def is_parameter_free_pool(name: str) -> bool:
    """Pooling ops get a BatchNorm inside a mixed op (as in DARTS) to match conv scales."""
    return name in ("avg_pool_3x3", "max_pool_3x3")
