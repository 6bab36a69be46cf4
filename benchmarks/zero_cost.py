"""Zero-cost scores of a network at initialization: one batch, no training.

* grad-norm: the summed L2 norms of the gradients of the loss (Abdelfattah et al. 2021);
* SynFlow: sum |theta * dR/dtheta| for R = the sum of the output of the network with
  |weights| on an all-ones input, in float64 (Tanaka et al. 2020), data-free;
* NASWOT: log-determinant of the kernel of the ReLU activation patterns of a batch
  (Mellor et al. 2021): networks that tell the inputs apart score higher;
* params.

Used by quality.py --fidelity on each trained run directory (its model.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import nn


def _batch(data: str, count: int = 16):
    from hpcnas.data.hdf5 import PatchReader, read_info

    info = read_info(data)
    reader = PatchReader(data, "train", info.num_classes)
    images, masks = [], []
    for i in range(min(count, info.split_sizes["train"])):
        image, mask = reader.read(i)
        images.append(image)
        masks.append(mask)
    reader.close()
    x = torch.from_numpy(info.normalization.apply(np.stack(images)))  # C order (see Normalization.apply)
    y = torch.from_numpy(np.stack(masks)).long()
    return x, y


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y, ignore_index=255).backward()
    return float(sum(p.grad.norm() for p in model.parameters() if p.grad is not None))


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    model = model.double().eval()
    with torch.no_grad():
        signs = [p.sign() for p in model.parameters()]
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones_like(x[:1], dtype=torch.float64)).sum().backward()
    score = float(sum((p * p.grad).abs().sum() for p in model.parameters() if p.grad is not None))
    with torch.no_grad():
        for p, s in zip(model.parameters(), signs):
            p.mul_(s)
    return score


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    codes = []

    def hook(module, inputs, output):
        codes.append((output.detach().flatten(1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(kernel).logabsdet)


def zero_cost_scores(run_dir: Path, data: str, seed: int = 0) -> Dict[str, float]:
    """Every score of the network a training run's ``model.json`` describes, freshly initialized."""
    from hpcnas.train.complexity import count_parameters
    from hpcnas.train.trainer import build_model

    spec = json.loads((Path(run_dir) / "model.json").read_text())
    x, y = _batch(data)
    scores = {}
    for name, score in (
        ("grad-norm", lambda m: grad_norm(m, x, y)),
        ("SynFlow", lambda m: synflow(m, x)),
        ("NASWOT", lambda m: naswot(m, x)),
    ):
        torch.manual_seed(seed)
        scores[name] = score(build_model(spec))
    torch.manual_seed(seed)
    scores["params"] = float(count_parameters(build_model(spec)))
    return scores
