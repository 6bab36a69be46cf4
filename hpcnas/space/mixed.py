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
  network's seeded generator (on the network's device, so a GPU draws it
  without a host copy), written back in place; in evaluation the first
  ``C / K`` channels, so that validation is deterministic.

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


class MaxPool2x2(torch.autograd.Function):
    """A 2x2, stride-2 max-pool that keeps only its argmax indices for backward, not its input: the windows
    do not overlap, so the gradient is the output's gradient scattered back to those indices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out, indices = nn.functional.max_pool2d(x, 2, 2, return_indices=True)
        ctx.save_for_backward(indices)
        ctx.input_size = x.shape[-2:]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (indices,) = ctx.saved_tensors
        return nn.functional.max_unpool2d(grad, indices, 2, 2, output_size=ctx.input_size)


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
            device = self.generator.device if self.generator is not None else x.device
            perm = torch.randperm(self.channels, generator=self.generator, device=device).to(x.device)
            through = x.index_select(1, perm[:width])  # gathered once: every op reads (and may save) this copy
            mixed = sum(w * op(through) for w, op in zip(weights, self.ops))
            # the bypass and the mixed channels back in their places with gathers, which save only indices for
            # backward (index_copy saved its source, and a plain max-pool its gathered input)
            bypass = x.index_select(1, perm[width:])
            if self.stride != 1:
                bypass = MaxPool2x2.apply(bypass)
            return torch.cat([mixed, bypass], dim=1).index_select(1, torch.argsort(perm))
        through = x[:, :width]  # sliced once: each slice's backward writes a zero-padded full-size gradient
        mixed = sum(w * op(through) for w, op in zip(weights, self.ops))
        out = torch.cat([mixed, self._bypass(x[:, width:])], dim=1)
        return channel_shuffle(out, self.partial) if self.sampling == "shuffle" else out

    def _bypass(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else nn.functional.max_pool2d(x, 2, 2)
