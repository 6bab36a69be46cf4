"""Peak training memory of a network, estimated before it runs: no GPU, tens of milliseconds on one CPU core.

One forward pass at the smallest input the network takes (a batch of 2 at one network stride) counts the
bytes autograd saves for backward.  Each saved tensor with a batch dimension grows with the batch and each
feature map with the pixels, so that one trace gives the bytes at every batch and tile size; it is exact
whenever the tile is a multiple of the stride (every feature map then scales with it), as training requires.
Training keeps more than that: the weights, their gradients and SGD's momentum (three copies of the
parameters), and backward's working set, taken as twice the largest saved feature map (an activation's
gradient and the gradient it produces).  Allocator slack and cuDNN workspaces are not modelled: the
dispatcher compares the estimate against a limit below the device's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable

import torch
from torch import nn

TRACE_BATCH = 2  # two samples, so that a batch dimension can be told from a channel dimension of 1


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training bytes of a network, as a function of the batch size."""

    parameters: int  # bytes of the parameters (kept three times: weights, gradients, momentum)
    saved_fixed: int  # saved tensors without a batch dimension
    saved_per_sample: int  # saved activations, per sample
    working_per_sample: int  # backward's working set, per sample

    def saved(self, batch: int) -> int:
        """Bytes autograd saves for backward in a forward pass of ``batch`` samples."""
        return self.saved_fixed + batch * self.saved_per_sample

    def total(self, batch: int) -> int:
        """Estimated peak bytes of a training step at ``batch``."""
        return 3 * self.parameters + self.saved(batch) + batch * self.working_per_sample

    def largest_batch(self, limit: float, most: int) -> int:
        """The largest batch up to ``most`` whose estimate is within ``limit`` bytes (0: not even one sample)."""
        fixed = self.total(0)
        per_sample = self.total(1) - fixed
        if per_sample <= 0:
            return most if fixed <= limit else 0
        return max(0, min(most, int((limit - fixed) // per_sample)))


def saved_storages(forward: Callable[[], Any], parameters: Iterable[torch.Tensor]) -> Dict[int, torch.Tensor]:
    """One tensor per distinct storage autograd saves for backward while ``forward()`` runs (``parameters``
    excluded: they are in memory anyway)."""
    params = {p.untyped_storage().data_ptr() for p in parameters}
    saved: Dict[int, torch.Tensor] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params and ptr not in saved:
                saved[ptr] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return saved


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in a forward pass of ``x`` (the measurement
    the estimate is calibrated against; parameters are not counted)."""
    return sum(t.untyped_storage().nbytes() for t in saved_storages(lambda: model(x), model.parameters()).values())


def estimate_training_memory(model: nn.Module, in_channels: int, tile: int, stride: int) -> MemoryEstimate:
    """The peak-memory model of training ``model`` on ``tile`` x ``tile`` inputs (``tile`` a multiple of ``stride``).

    ``model`` is traced on the CPU at batch 2 and ``stride`` pixels, in train mode, and left exactly as it was:
    its buffers (batch-norm statistics), the global random stream and the modules' own generators (partial
    channels' draws), so an exact resume stays exact.
    """
    was_training = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    generators = {
        id(g): (g, g.get_state())
        for m in model.modules()
        if isinstance(g := getattr(m, "generator", None), torch.Generator)
    }
    model.train()
    with torch.random.fork_rng(devices=[]):  # dropout, if any, must not move the caller's random stream
        x = torch.zeros(TRACE_BATCH, in_channels, stride, stride)
        saved = saved_storages(lambda: model(x), model.parameters())
    model.train(was_training)
    with torch.no_grad():
        for buffer, before in buffers:
            buffer.copy_(before)
    for generator, state in generators.values():
        generator.set_state(state)
    pixels = (tile // stride) ** 2
    fixed, per_sample, largest = 0, 0.0, 0.0
    for t in saved.values():
        size = t.untyped_storage().nbytes()
        if t.dim() >= 2 and t.shape[0] == TRACE_BATCH:
            scaled = size / TRACE_BATCH * (pixels if t.dim() == 4 else 1)
            per_sample += scaled
            largest = max(largest, scaled)
        else:
            fixed += size
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    return MemoryEstimate(parameters, fixed, round(per_sample), round(2 * largest))
