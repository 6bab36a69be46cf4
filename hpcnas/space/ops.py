"""Candidate operations, by the names genotypes store.

Conventions follow the DARTS reference code: ReLU-Conv-BN, separable
convolutions applied twice, a factorized reduce for a strided skip, and a
zero op that returns zeros of the right shape.  Every op maps C channels to C
channels with stride 1 or 2.
"""

from __future__ import annotations

import torch
from torch import nn

from hpcnas.space.topology import OPS


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


# The built-in ops, each under the name genotypes store; hpcnas.space.topology registers them (with what kind
# of op each is) in hpcnas.plugins.OPS.  Each builds (channels, stride, affine) -> module.

# O_base (DARTS / PC-DARTS)


def none(c: int, s: int, a: bool) -> nn.Module:
    return Zero(s)


def avg_pool_3x3(c: int, s: int, a: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False)


def max_pool_3x3(c: int, s: int, a: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=s, padding=1)


def skip_connect(c: int, s: int, a: bool) -> nn.Module:
    return nn.Identity() if s == 1 else FactorizedReduce(c, c, a)


def sep_conv_3x3(c: int, s: int, a: bool) -> nn.Module:
    return SepConv(c, 3, s, a)


def sep_conv_5x5(c: int, s: int, a: bool) -> nn.Module:
    return SepConv(c, 5, s, a)


def dil_conv_3x3(c: int, s: int, a: bool) -> nn.Module:
    return DilConv(c, 3, s, 2, a)


def dil_conv_5x5(c: int, s: int, a: bool) -> nn.Module:
    return DilConv(c, 5, s, 2, a)


# O_large (the paper's): k x k convolutions, depthwise and spatially separable, k = 3, 5, 7


def conv2d_1(c: int, s: int, a: bool) -> nn.Module:
    return ReLUConvBN(c, c, 3, s, 1, affine=a)


def conv2d_2(c: int, s: int, a: bool) -> nn.Module:
    return ReLUConvBN(c, c, 5, s, 2, affine=a)


def conv2d_3(c: int, s: int, a: bool) -> nn.Module:
    return ReLUConvBN(c, c, 7, s, 3, affine=a)


def depthconv2d_1(c: int, s: int, a: bool) -> nn.Module:
    return ReLUConvBN(c, c, 3, s, 1, groups=c, affine=a)


def depthconv2d_2(c: int, s: int, a: bool) -> nn.Module:
    return ReLUConvBN(c, c, 5, s, 2, groups=c, affine=a)


def depthconv2d_3(c: int, s: int, a: bool) -> nn.Module:
    return ReLUConvBN(c, c, 7, s, 3, groups=c, affine=a)


def splitconv2d_1(c: int, s: int, a: bool) -> nn.Module:
    return SplitConv(c, 3, s, a)


def splitconv2d_2(c: int, s: int, a: bool) -> nn.Module:
    return SplitConv(c, 5, s, a)


def splitconv2d_3(c: int, s: int, a: bool) -> nn.Module:
    return SplitConv(c, 7, s, a)


skip = skip_connect
cut = none


def build_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Instantiate the registered op ``name`` for ``channels`` channels and ``stride`` 1 or 2."""
    return OPS[name].module(channels, stride, affine)


def is_parameter_free_pool(name: str) -> bool:
    """Pooling ops get a BatchNorm inside a mixed op (as in DARTS) to match conv scales."""
    return bool(OPS[name].rescaled)
