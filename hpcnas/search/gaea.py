"""Architecture optimizers: GAEA's exponentiated gradient (eq. 10-11) and DARTS' Adam, by name.

A fixed step moves theta in proportion to the number of architecture steps, so one value cannot serve a
search of fifty steps and one of five thousand.  A *movement* sets theta's total movement instead: each
step is ``movement / steps`` on a gradient divided by the running root mean square of its spread (Adam
divides its own), so an op the data favour at every step gains about ``e ** movement`` in odds over the
whole search, whatever its length.

Each optimizer brings its default step: GAEA a movement of 12 (measured on the paired quality benchmark:
theta ends at 0.77 of uniform entropy instead of 0.92 under the reference's fixed lr 0.1 scaled up by hand,
at the same mIoU); PC-DARTS' Adam its reference lr 6e-4, weight decay 1e-3 and betas (0.5, 0.999).
``search.arch_lr`` or ``search.arch_movement`` replaces it (a GAEA step on a logit scale, or the reverse,
is off by orders of magnitude, hence a default per optimizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

# GAEA's reference clamps every probability at this floor, so that an op that lost can still come back.
SIMPLEX_FLOOR = 1e-5


# the running mean of squared gradient spread that a normalized step divides by (bias-corrected like Adam's)
NORMALIZED_BETA = 0.99
NORMALIZED_EPS = 1e-12


class ExponentiatedGradient(torch.optim.Optimizer):
    """GAEA: ``theta <- theta * exp(-lr * grad)``, floored at ``floor``, then renormalized per row.

    Every parameter is a tensor of probability vectors along its last dimension.
    Each row's gradient is shifted by its minimum before ``exp``: a constant
    added to a row changes nothing after renormalization, and the shift keeps
    the largest factor at exactly 1, so no row underflows to 0 / 0 = NaN.
    With ``normalize``, the gradient is first divided by the running root mean
    square of its spread within rows, so that ``lr`` is a movement in
    log-probability per step.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 0.1,
        floor: float = SIMPLEX_FLOOR,
        normalize: bool = False,
    ):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, dict(lr=lr, floor=floor, normalize=normalize))

    def _normalized(self, p: torch.nn.Parameter) -> torch.Tensor:
        # One scale per tensor, from the gradient's spread within rows (a constant added to a row moves nothing):
        # an edge whose ops the data hardly tell apart keeps a small step next to one they clearly do.
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["square_avg"] = torch.zeros((), dtype=p.dtype, device=p.device)
        state["step"] += 1
        spread = (p.grad - p.grad.mean(dim=-1, keepdim=True)).square().mean()
        state["square_avg"].mul_(NORMALIZED_BETA).add_(spread, alpha=1 - NORMALIZED_BETA)
        unbiased = state["square_avg"] / (1 - NORMALIZED_BETA ** state["step"])
        return p.grad / (unbiased.sqrt() + NORMALIZED_EPS)

    @torch.no_grad()
    def step(self, closure=None):
        """One exponentiated-gradient step on every parameter that has a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._normalized(p) if group["normalize"] else p.grad
                g = g - g.amin(dim=-1, keepdim=True)
                p.mul_(torch.exp(-group["lr"] * g))
                p.div_(p.sum(dim=-1, keepdim=True))
                p.clamp_(min=group["floor"])
                p.div_(p.sum(dim=-1, keepdim=True))
        return loss


@dataclass(frozen=True)
class ArchOptimizer:
    """One architecture optimizer: how theta is stored, its default step, and how to build it."""

    mode: str  # "simplex": rows are probabilities; "logits": rows are softmax logits
    default_lr: float  # the fixed step, when neither an lr nor a movement is given and there is no default movement
    build: Callable[..., torch.optim.Optimizer]  # (params, lr, weight_decay, normalize) -> optimizer
    default_movement: Optional[float] = None  # the default: a step scaled to the search (see the module's docstring)

    def make(
        self,
        params,
        lr: Optional[float],
        weight_decay: float,
        movement: Optional[float] = None,
        steps: int = 1,
    ) -> torch.optim.Optimizer:
        """The optimizer over ``params``: a fixed step ``lr``, or a normalized step of ``movement / steps``; with
        neither, this optimizer's default (its movement, else its lr)."""
        scaled_to = self.movement(lr, movement)
        if scaled_to is not None:
            return self.build(params, scaled_to / max(steps, 1), weight_decay, True)
        return self.build(params, self.default_lr if lr is None else lr, weight_decay, False)

    def movement(self, lr: Optional[float], movement: Optional[float]) -> Optional[float]:
        """The total movement :meth:`make` scales its step to, or ``None`` for a fixed step."""
        return None if lr is not None else movement if movement is not None else self.default_movement


# registered in hpcnas.plugins.ARCH_OPTIMIZERS as "gaea" and "adam"
GAEA = ArchOptimizer(
    "simplex",
    0.1,
    lambda params, lr, wd, normalize: ExponentiatedGradient(params, lr=lr, normalize=normalize),
    default_movement=12.0,
)
# Adam's step is already a normalized one: ``normalize`` changes nothing there
ADAM = ArchOptimizer(
    "logits",
    6e-4,
    lambda params, lr, wd, normalize: torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=wd),
)
