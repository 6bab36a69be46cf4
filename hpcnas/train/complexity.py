"""How big and how fast a network is: parameters, FLOPs per tile, forward latency, and the width that reaches a
parameter budget.

Counting runs on the ``meta`` device: modules are built and traced with
shapes only, no memory and no arithmetic, so sizing a network for a
512 px tile costs milliseconds.  FLOPs are torch's ``FlopCounterMode``
count of one forward pass of one tile (a multiply-add is 2 FLOPs).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def median_forward_ms(module: nn.Module, x: torch.Tensor, runs: int, warmup: int) -> float:
    """Median milliseconds of one eval-mode forward pass of ``x`` through ``module``, after ``warmup`` passes
    (a GPU is synchronized around each pass, so the time is the kernels', not the launch's)."""
    module.eval()
    cuda = x.device.type == "cuda"
    times = []
    for i in range(warmup + runs):
        if cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        module(x)
        if cuda:
            torch.cuda.synchronize(x.device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def complexity(build: Callable[[], nn.Module], in_channels: int, tile: int) -> Dict[str, int]:
    """``{"params": ..., "flops": ...}`` of the network ``build()`` makes: built once, on the meta device (no
    memory, no compute), the FLOPs of one forward pass of one ``tile`` x ``tile`` input."""
    with torch.device("meta"):
        model = build().eval()
        x = torch.empty(1, in_channels, tile, tile)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return {"params": count_parameters(model), "flops": int(counter.get_total_flops())}


def width_for_parameters(
    build: Callable[[Any], nn.Module], target: int, low: int = 1, high: int = 1024, fractions: int = 1
) -> Union[int, float]:
    """The width ``w`` in ``[low, high]`` whose network ``build(w)`` has the parameter count nearest ``target``.

    Parameters grow with the width, so a bisection finds the two widths around
    the target; the nearer of the two wins (the smaller on a tie).  With
    ``fractions`` > 1 the widths are multiples of ``1 / fractions`` (for a
    network that takes a fractional width); a whole width is still an ``int``.
    """
    if fractions > 1:
        best = width_for_parameters(lambda q: build(q / fractions), target, low * fractions, high * fractions)
        return best // fractions if best % fractions == 0 else best / fractions

    def params(width: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(width))

    if params(low) >= target:
        return low
    if params(high) <= target:
        return high
    lo, hi = low, high  # params(lo) < target <= params(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo if target - params(lo) <= params(hi) - target else hi
