"""The mixed op (paper eq. 4) with partial channel connections (eq. 7).

``MixedOp(x, w) = sum_o w_o * o(x)`` over the op set.  With ``partial = K >
1`` only ``C / K`` channels, sampled afresh each call from a seeded generator,
go through the ops; the other channels bypass them (max-pooled when the edge
is strided).  ``K = 1`` is plain DARTS.  Edge normalization (eq. 8) weighs
whole edges and lives in the cell.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hpcnas.space.ops import build_op, is_parameter_free_pool


class MixedOp(nn.Module):
    """Weighted sum of every candidate op on one edge."""

    def __init__(self, op_names: Sequence[str], channels: int, stride: int, partial: int = 1, generator: Optional[torch.Generator] = None):
        super().__init__()
        if channels % partial:
            raise ValueError(f"{channels} channels cannot be split into 1/{partial} parts (search.partial_channels)")
        self.channels, self.stride, self.partial = channels, stride, partial
        self.generator = generator  # shared with the network, so it is checkpointed once
        width = channels // partial
        ops = []
        for name in op_names:
            op = build_op(name, width, stride, affine=False)
            if is_parameter_free_pool(name):
                op = nn.Sequential(op, nn.BatchNorm2d(width, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.partial == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        idx = torch.randperm(self.channels, generator=self.generator)[: self.channels // self.partial].to(x.device)
        mixed = sum(w * op(x.index_select(1, idx)) for w, op in zip(weights, self.ops))
        bypass = x if self.stride == 1 else nn.functional.max_pool2d(x, 2, 2)
        return bypass.index_copy(1, idx, mixed)
