"""Zero-cost scores of a network at initialization: one batch, no training.

* ``grad_norm``: the summed L2 norms of the gradients of the loss (Abdelfattah et al. 2021);
* ``synflow``: sum |theta * dR/dtheta| for R = the sum of the output of the network with |weights| on an
  all-ones input, in float64 (Tanaka et al. 2020), data-free;
* ``naswot``: log-determinant of the kernel of the ReLU activation patterns of a batch (Mellor et al. 2021):
  networks that tell the inputs apart score higher;
* ``params``: the parameter count.

Every score is computed on a fresh network initialized from a fixed seed, on CPU or GPU, and higher is
"better" as each paper ranks them (the parameter count too: larger networks train to higher mIoU).

The scores are registered in :data:`hpcnas.plugins.ZERO_COST_SCORES`; a score of your own is a function
``(model, images, masks) -> float`` added there (``ZERO_COST_SCORES.add("name", function)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from hpcnas.plugins import ZERO_COST_SCORES

if TYPE_CHECKING:
    from hpcnas.train.spec import ModelSpec


def training_batch(data: str, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` patches of the train split, normalized as training sees them, and their masks."""
    from hpcnas.data.hdf5 import PatchReader, read_info

    info = read_info(data)
    reader = PatchReader(data, "train", info.num_classes)
    try:
        pairs = [reader.read(i) for i in range(min(count, info.split_sizes["train"]))]
    finally:
        reader.close()
    images = np.stack([image for image, _ in pairs])
    x = torch.from_numpy(info.normalization.apply(images))  # C order (see Normalization.apply)
    y = torch.from_numpy(np.stack([mask for _, mask in pairs])).long()
    return x, y


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Summed L2 norms of the weight gradients of the cross-entropy on one batch."""
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y, ignore_index=255).backward()
    with torch.no_grad():
        return float(sum(p.grad.norm() for p in model.parameters() if p.grad is not None))


def synflow(model: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> float:
    """SynFlow, data-free: the model is turned to float64 with |weights| (and left so)."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones_like(x[:1], dtype=torch.float64)).sum().backward()
    with torch.no_grad():
        return float(sum((p * p.grad).abs().sum() for p in model.parameters() if p.grad is not None))


def naswot(model: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> float:
    """log |det K| of the Hamming-similarity kernel of the batch's ReLU activation codes."""
    codes = []

    def hook(module, inputs, output):
        codes.append((output.detach().flatten(1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(kernel).logabsdet)


def params(model: nn.Module, x: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None) -> float:
    """The parameter count."""
    return float(sum(p.numel() for p in model.parameters()))


def zero_cost_scores(
    build: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    names: Optional[Sequence[str]] = None,
    seed: int = 0,
) -> Dict[str, float]:
    """The named scores (None: every registered one) of the network ``build()`` makes, each on a fresh copy
    initialized from ``seed``."""
    device = x.device
    scores: Dict[str, float] = {}
    for name in ZERO_COST_SCORES.names() if names is None else names:
        score = ZERO_COST_SCORES[name]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            scores[name] = float(score(build().to(device), x, y))
    return scores


class GenotypeScorer:
    """Zero-cost scores of networks as ``cfg`` builds them, on the first ``batch`` training patches of ``data``
    (read at the first call). The pre-screen scores on rank 0's CPU with one thread (``one_thread``: rank 0's own
    worker needs the cores); a worker child scores on its own device."""

    def __init__(
        self,
        cfg,
        data: str,
        names: Optional[Sequence[str]],
        batch: int,
        device: Optional[torch.device] = None,
        one_thread: bool = False,
    ):
        names = ZERO_COST_SCORES.names() if names is None else names  # None: every registered score
        self.cfg, self.data, self.names, self.batch_size = cfg, data, list(names), batch
        self.device, self.one_thread = device or torch.device("cpu"), one_thread
        self.info = None
        self.batch: Tuple[torch.Tensor, torch.Tensor] = (torch.empty(0), torch.empty(0))

    def __call__(self, genotype) -> float:
        """The first score of ``genotype``'s network."""
        from hpcnas.data.hdf5 import read_info
        from hpcnas.train.spec import model_spec

        if self.info is None:
            self.info = read_info(self.data)
        return self.scores(model_spec(self.cfg, self.info, genotype, measure=False))[self.names[0]]

    def scores(self, spec: ModelSpec) -> Dict[str, float]:
        """Every score of the network ``spec`` describes."""
        if not len(self.batch[0]):
            if self.one_thread:
                torch.set_num_threads(1)
            x, y = training_batch(self.data, self.batch_size)
            self.batch = (x.to(self.device), y.to(self.device))
        x, y = self.batch
        return zero_cost_scores(spec.build, x, y, self.names, seed=self.cfg.seed)
