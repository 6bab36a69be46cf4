"""The mixed op (paper eq. 4) with partial channel connections (eq. 7).

``MixedOp(x, w) = sum_o w_o * o(x)`` over the op set.  With ``partial = K >
1`` only ``C / K`` channels go through the ops; the other channels bypass them
(max-pooled when the edge is strided).  ``K = 1`` is plain DARTS.  Which
channels go through is the ``sampling`` scheme:

* ``"shuffle"`` (the PC-DARTS reference): the first ``C / K`` channels, the
  bypass concatenated after them, then a channel shuffle with ``K`` groups,
  so the next edge sees other channels.  No randomness: training and
  evaluation see the same network.
* ``"random"``: ``C / K`` channels drawn afresh each training call from the
  network's seeded generator, written back in place; in evaluation the
  first ``C / K`` channels, so that validation is deterministic.

Edge normalization (eq. 8) weighs whole edges and lives in the cell.
``aux_skip`` (DARTS-) adds ``aux_skip * x`` to a stride-1 edge's output: an
explicit residual, decayed to 0 by the search loop, so the ``skip_connect``
op no longer has to win the softmax to carry the gradient.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hpcnas.space.ops import build_op, is_parameter_free_pool

CHANNEL_SAMPLING = ("shuffle", "random")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel groups (ShuffleNet): channel ``g*n + i`` moves to ``i*groups + g``."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MixedOp(nn.Module):
    """Weighted sum of every candidate op on one edge."""

    def __init__(
        self,
        op_names: Sequence[str],
        channels: int,
        stride: int,
        partial: int = 1,
        generator: Optional[torch.Generator] = None,
        sampling: str = "shuffle",
    ):
        super().__init__()
        if channels % partial:
            raise ValueError(f"{channels} channels cannot be split into 1/{partial} parts (search.partial_channels)")
        if sampling not in CHANNEL_SAMPLING:
            raise ValueError(f"unknown channel sampling {sampling!r} (known: {', '.join(CHANNEL_SAMPLING)})")
        self.channels, self.stride, self.partial, self.sampling = channels, stride, partial, sampling
        self.op_names = tuple(op_names)
        self.generator = generator  # shared with the network, so it is checkpointed once
        self.aux_skip = 0.0  # DARTS-: set by the search loop each epoch
        width = channels // partial
        ops = []
        for name in op_names:
            op = build_op(name, width, stride, affine=False)
            if is_parameter_free_pool(name):
                op = nn.Sequential(op, nn.BatchNorm2d(width, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = self._mixed(x, weights)
        if self.aux_skip and self.stride == 1:
            out = out + self.aux_skip * x
        return out

    def _mixed(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.partial == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        width = self.channels // self.partial
        if self.sampling == "random" and self.training:
            perm = torch.randperm(self.channels, generator=self.generator).to(x.device)
            idx = perm[:width]
            mixed = sum(w * op(x.index_select(1, idx)) for w, op in zip(weights, self.ops))
            if self.stride == 1:
                return x.index_copy(1, idx, mixed)
            # strided: pool only the bypassed channels (pooling all of x saved all of x for backward: 1.17x
            # the bytes of the reference's slice), then put every channel back in its place
            pooled = nn.functional.max_pool2d(x.index_select(1, perm[width:]), 2, 2)
            return torch.cat([mixed, pooled], dim=1).index_select(1, torch.argsort(perm))
        mixed = sum(w * op(x[:, :width]) for w, op in zip(weights, self.ops))
        out = torch.cat([mixed, self._bypass(x[:, width:])], dim=1)
        return channel_shuffle(out, self.partial) if self.sampling == "shuffle" else out

    def _bypass(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else nn.functional.max_pool2d(x, 2, 2)
