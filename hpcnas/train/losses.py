"""Training losses for segmentation, by name (``train.loss``): one class each, registered in
:data:`hpcnas.plugins.LOSSES`.

Overhead imagery is mostly background, and its objects (vehicles, aircraft, small buildings) are a few
dozen pixels: the class-weighted cross-entropy (``ce``, the paper's) can be joined or replaced by losses
that look at each object's overlap (``dice``) or at the pixels still wrong (``focal``).  Every loss
ignores padding and nodata (``IGNORE_INDEX``).  On several ranks the cross-entropy terms are normalized
over the global batch (exact data parallelism); the Dice term is each rank's own batch, averaged with
the gradients.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from hpcnas.data.hdf5 import IGNORE_INDEX
from hpcnas.plugins import LOSSES


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy weighted by the data set's class weights (padding ignored), normalized by
    the weight sum of the *global* batch (all ranks; one rank: the usual weighted mean).

    Each rank returns ``sum_rank(w * l) / (W_global / ranks)``, so averaging the
    ranks' gradients gives exactly the gradient of one weighted mean over the
    union of their batches (a per-rank mean would weigh ranks unequally).
    """

    def __init__(self, class_weights: np.ndarray, device: torch.device, ctx):
        super().__init__()
        self.weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
        self.ctx = ctx

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total, weights = self.terms(logits, target)
        weight_sum = self.ctx.sum(weights.detach().reshape(1), name="hpcnas.loss_weights")[0]
        return total / (weight_sum.clamp_min(1e-12) / self.ctx.size)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """This rank's summed weighted loss and its summed pixel weights (no collective: summed over
        batches, they give the weighted mean of a whole pass)."""
        total = nn.functional.cross_entropy(
            logits, target, weight=self.weight, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        # no boolean indexing: its size depends on the data, which makes the host wait for the GPU
        labelled = target != IGNORE_INDEX
        return total, (self.weight[target.clamp(max=len(self.weight) - 1)] * labelled).sum()


class FocalLoss(WeightedCrossEntropy):
    """Focal loss (Lin et al., 2017): the weighted cross-entropy of each pixel scaled by ``(1 - p)^gamma``, so
    pixels already classified well (most of the background) weigh little; normalized like the cross-entropy."""

    gamma = 2.0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = target != IGNORE_INDEX
        safe = target.clamp(min=0, max=logits.shape[1] - 1).masked_fill(~labelled, 0)
        log_p = torch.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        per_pixel = self.weight[safe] * labelled
        total = -(per_pixel * (1 - log_p.exp()).pow(self.gamma) * log_p).sum()
        weight_sum = self.ctx.sum(per_pixel.sum().detach().reshape(1), name="hpcnas.loss_weights")[0]
        return total / (weight_sum.clamp_min(1e-12) / self.ctx.size)


class DiceLoss(nn.Module):
    """1 - the soft Dice coefficient, averaged over the foreground classes present in the batch or predicted
    (background left out: it is the easy majority), on labelled pixels only."""

    def __init__(self, class_weights: np.ndarray, device: torch.device, ctx):
        super().__init__()
        self.ctx = ctx

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = (target != IGNORE_INDEX).unsqueeze(1)
        probs = torch.softmax(logits, dim=1) * labelled
        safe = target.clamp(min=0, max=logits.shape[1] - 1).masked_fill(~labelled.squeeze(1), 0)
        truth = nn.functional.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype) * labelled
        dims = (0, 2, 3)
        intersection = (probs * truth).sum(dims)[1:]
        sizes = (probs.sum(dims) + truth.sum(dims))[1:]
        present = sizes > 1e-6  # a class neither in the batch nor predicted says nothing
        if not bool(present.any()):
            return logits.sum() * 0.0
        dice = (2 * intersection + 1.0) / (sizes + 1.0)
        return 1 - dice[present].mean()


class CrossEntropyDice(nn.Module):
    """The weighted cross-entropy plus the Dice loss, with equal weights."""

    def __init__(self, class_weights: np.ndarray, device: torch.device, ctx):
        super().__init__()
        self.ce = WeightedCrossEntropy(class_weights, device, ctx)
        self.dice = DiceLoss(class_weights, device, ctx)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice(logits, target)


def make_loss(name: str, class_weights: np.ndarray, device: torch.device, ctx) -> nn.Module:
    """The loss registered as ``name``, for a data set's class weights."""
    return LOSSES[name](class_weights, device, ctx)
