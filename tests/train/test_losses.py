"""train.loss: each loss ignores padding, is smallest for the right answer, and trains a network end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcnas.data.hdf5 import IGNORE_INDEX
from hpcnas.distributed import SingleProcess
from hpcnas.errors import UserError
from hpcnas.pipeline import train
from hpcnas.rundir import read_jsonl
from hpcnas.train.losses import LOSSES, FocalLoss, WeightedCrossEntropy, make_loss
from tests.conftest import ROOT

WEIGHTS = np.array([0.2, 1.8], np.float32)


def target():
    t = torch.zeros(2, 8, 8, dtype=torch.long)
    t[:, 2:5, 2:5] = 1
    t[:, 0, :] = IGNORE_INDEX
    return t


@pytest.mark.parametrize("name", list(LOSSES))
def test_the_right_answer_costs_least_and_ignored_pixels_cost_nothing(name):
    loss = make_loss(name, WEIGHTS, torch.device("cpu"), SingleProcess())
    t = target()
    right = torch.nn.functional.one_hot(t.masked_fill(t == IGNORE_INDEX, 0), 2).permute(0, 3, 1, 2).float() * 8 - 4
    wrong = -right
    assert loss(right, t) < loss(torch.zeros_like(right), t) < loss(wrong, t)
    garbage = right.clone()
    garbage[:, :, 0, :] = torch.randn(2, 2, 8) * 50  # the ignored row may hold anything
    assert loss(garbage, t).item() == pytest.approx(loss(right, t).item(), abs=1e-6)
    logits = torch.zeros_like(right, requires_grad=True)
    loss(logits, t).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_focal_loss_without_focusing_is_the_weighted_cross_entropy():
    args = (WEIGHTS, torch.device("cpu"), SingleProcess())
    focal, ce = FocalLoss(*args), WeightedCrossEntropy(*args)
    focal.gamma = 0.0
    logits = torch.randn(2, 2, 8, 8)
    assert focal(logits, target()).item() == pytest.approx(ce(logits, target()).item(), rel=1e-5)


@pytest.mark.slow
def test_an_unknown_loss_is_refused_and_dice_trains_end_to_end(tmp_path):
    with pytest.raises(UserError, match="unknown loss 'tversky'"):
        make_loss("tversky", WEIGHTS, torch.device("cpu"), SingleProcess())
    sets = ["train.loss=ce+dice", "train.epochs=2", "train.max_steps_per_epoch=3", "device=cpu"]
    _, run = train(str(ROOT / "configs" / "smoke.yaml"), sets, genotype="random", out=str(tmp_path / "t"))
    losses = [r["train_loss"] for r in read_jsonl(run / "metrics.jsonl")]
    assert len(losses) == 2 and all(np.isfinite(losses))
