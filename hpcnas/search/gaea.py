"""Architecture optimizers: GAEA's exponentiated gradient (eq. 10-11) and DARTS' Adam."""

from __future__ import annotations

from typing import Iterable

import torch


class ExponentiatedGradient(torch.optim.Optimizer):
    """GAEA: ``theta <- theta * exp(-lr * grad)``, then renormalize each probability vector.

    Every parameter is a tensor of probability vectors along its last dimension.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 0.1):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        """One exponentiated-gradient step on every parameter that has a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(torch.exp(-group["lr"] * p.grad))
                p.div_(p.sum(dim=-1, keepdim=True))
        return loss


def make_arch_optimizer(kind: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``gaea`` -> :class:`ExponentiatedGradient`; ``adam`` -> Adam on logits (DARTS betas)."""
    if kind == "gaea":
        return ExponentiatedGradient(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)


def arch_mode(kind: str) -> str:
    """How the architecture parameters are stored for an optimizer kind."""
    return "simplex" if kind == "gaea" else "logits"
