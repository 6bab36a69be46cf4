"""Pieces shared by the supernet search and the retraining loop."""

from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np
import torch
from torch import nn

from hpcnas.data.hdf5 import IGNORE_INDEX
from hpcnas.train.metrics import confusion


def weighted_cross_entropy(class_weights: np.ndarray, device: torch.device) -> nn.Module:
    """Cross-entropy weighted by the data set's class weights, ignoring padded pixels."""
    return nn.CrossEntropyLoss(weight=torch.as_tensor(class_weights, dtype=torch.float32, device=device), ignore_index=IGNORE_INDEX)


def cosine_sgd(params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float, epochs: int, lr_min: float) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum, cosine-annealed from ``lr`` to ``lr_min`` over ``epochs`` (paper section 5)."""
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr_min)


@torch.no_grad()
def evaluate_confusion(model: nn.Module, loader, device: torch.device, num_classes: int) -> np.ndarray:
    """Summed confusion matrix of the model's argmax predictions over a loader."""
    was_training = model.training
    model.eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for images, masks in loader:
        pred = model(images.to(device)).argmax(1).cpu().numpy()
        conf += confusion(pred, masks.numpy(), num_classes)
    model.train(was_training)
    return conf
