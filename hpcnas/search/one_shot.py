"""One-shot estimates: a genotype scored inside a trained supernet, its weights inherited.

Weight sharing (ENAS; Bender et al., "Understanding and simplifying one-shot architecture search") ranks
architectures without training each one: the supernet of a finished search holds every op of every edge, so a
genotype of its space is scored by switching off, on every edge, the ops the genotype does not choose (and the
edges it does not keep), then validating what is left. ``benchmarks/quality.py --fidelity`` measures how far this
ranks architectures as their retrained test mIoU does.

What is left is the supernet restricted to the genotype's ops, not the discrete network: with partial channels
an edge's bypassed channels still pass, and the edge weights (PC-DARTS) and the UNet++ path weights stay as the
search left them. The BatchNorm statistics are the supernet's own, as in its validation.

The perturbation score asks the other way round, as DARTS-PT's selection does: how much the whole supernet's
validation loss rises when each of the genotype's ops is removed from it alone, summed over the genotype's ops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from hpcnas.checkpoint import load_checkpoint
from hpcnas.config import load_config
from hpcnas.data.hdf5 import read_info
from hpcnas.data.torch_dataset import validation_loader
from hpcnas.distributed import SingleProcess
from hpcnas.errors import UserError
from hpcnas.rundir import RunDir
from hpcnas.runtime import select_device
from hpcnas.search.continuous import build_supernet
from hpcnas.search.perturbation import removal_drops
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.losses import WeightedCrossEntropy
from hpcnas.train.metrics import confusion, miou


def genotype_rows(space: SearchSpace, genotype: Genotype, roles: Sequence[str]) -> Dict[str, Dict[int, torch.Tensor]]:
    """Per role, per edge (in the order of theta's rows): the op weights that leave the genotype's choice alone,
    1 for each op it puts on the edge (2 for an op it puts there twice: a random cell may draw an input twice, and
    the network then sums both) and 0 for every other op, so an edge it does not keep carries nothing. The
    inverse of the decode."""
    op_names = list(space.ops)
    rows: Dict[str, Dict[int, torch.Tensor]] = {}
    for role in roles:
        cell = genotype.cell(role)
        role_rows: Dict[int, torch.Tensor] = {}
        first = 0
        for node in range(space.node_count()):
            sources = space.sources(node)
            for offset in range(len(sources)):
                role_rows[first + offset] = torch.zeros(len(op_names))
            for op, source in cell[node]:
                role_rows[first + sources.index(source)][op_names.index(op)] += 1.0
            first += len(sources)
        rows[role] = role_rows
    return rows


@dataclass(frozen=True)
class OneShotScore:
    """A genotype's figures inside a supernet: validation mIoU, and the class-weighted cross-entropy (which moves
    with every change of the logits where the argmax's mIoU may not)."""

    miou: float
    loss: float


class TrainedSupernet:
    """The supernet of a finished ``hpcnas search`` run (its run directory), loaded once and validated as often as
    asked, on ``data_path`` (default: the data the search ran on) or its first ``max_tiles`` validation tiles."""

    def __init__(
        self, search_run: Path, data_path: Optional[str] = None, max_tiles: Optional[int] = None, device: str = "cpu"
    ):
        run = RunDir(search_run)
        self.source = str(search_run)
        cfg = load_config(str(run.config))
        if data_path is None:
            data_path = str(json.loads(run.data_fingerprint.read_text())["path"])
        self.info = read_info(data_path)
        self.space = SearchSpace.from_config(cfg)
        self.device = select_device(device)
        self.model = build_supernet(cfg, self.info, self.device)
        state = load_checkpoint(run.latest, self.device)
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise UserError(
                f"checkpoint does not match the run's supernet ({str(exc).splitlines()[0][:200]})",
                source=str(run.latest),
            ) from None
        self.model.eval()
        loader = validation_loader(data_path, cfg.search.batch_size, max_tiles=max_tiles)
        if loader is None:
            raise UserError("the supernet is validated, and the validation split is empty", source=data_path)
        self.loader = loader
        self.criterion = WeightedCrossEntropy(self.info.class_weights, self.device, SingleProcess())
        self._whole_loss: Optional[float] = None  # the whole supernet's validation loss, once measured
        self._drops: Dict[Tuple[str, int], Dict[int, float]] = {}  # (role, edge) -> op -> its removal's loss rise

    def one_shot(self, genotypes: Sequence[Genotype]) -> List[OneShotScore]:
        """Each genotype's validation figures with the supernet's weights inherited: on every edge the ops the
        genotype does not choose switched off. A genotype of another space is a :class:`UserError`."""
        self._check(genotypes)
        scores = []
        for genotype in genotypes:
            self.model.arch.fixed_rows = self._rows(genotype)
            try:
                scores.append(self.validate())
            finally:
                self.model.arch.fixed_rows = {}
        return scores

    def perturbation(self, genotypes: Sequence[Genotype]) -> List[float]:
        """Each genotype's perturbation score (DARTS-PT's measure, :mod:`hpcnas.search.perturbation`): what
        removing each of its ops from the whole supernet costs in validation loss, summed over its ops (an op it
        puts on an edge twice counts twice). Higher: the supernet relies more on the genotype's ops. Each removal
        is measured once (one validation of the whole supernet), when a genotype first holds that op there."""
        self._check(genotypes)
        chosen = [self._chosen_ops(genotype) for genotype in genotypes]
        unmeasured: Dict[Tuple[str, int], set] = {}
        for ops in chosen:
            for role, edge, op, _ in ops:
                if op not in self._drops.get((role, edge), {}):
                    unmeasured.setdefault((role, edge), set()).add(op)
        for (role, edge), wanted in sorted(unmeasured.items()):
            if self._whole_loss is None:
                self._whole_loss = self.validate().loss
            row = removal_drops(
                self.model.arch, role, edge, -self._whole_loss, lambda: -self.validate().loss, sorted(wanted)
            )
            self._drops.setdefault((role, edge), {}).update({op: float(row[op]) for op in wanted})
        return [sum(count * self._drops[(role, edge)][op] for role, edge, op, count in ops) for ops in chosen]

    def _chosen_ops(self, genotype: Genotype) -> List[Tuple[str, int, int, float]]:
        """(role, edge, op column, how many times) for every op the genotype puts on an edge."""
        return [
            (role, edge, int(op), float(row[op]))
            for role, edges in genotype_rows(self.space, genotype, self.model.arch.roles).items()
            for edge, row in edges.items()
            for op in torch.nonzero(row).flatten()
        ]

    def _check(self, genotypes: Sequence[Genotype]) -> None:
        for genotype in genotypes:
            self.space.check(genotype, source=self.source)

    def _rows(self, genotype: Genotype) -> Dict[str, Dict[int, torch.Tensor]]:
        return {
            role: {edge: row.to(self.device) for edge, row in edges.items()}
            for role, edges in genotype_rows(self.space, genotype, self.model.arch.roles).items()
        }

    def validate(self) -> OneShotScore:
        """The supernet's validation figures as it stands: theta's weights, but for the rows fixed in
        ``model.arch.fixed_rows``."""
        conf = np.zeros((self.info.num_classes, self.info.num_classes), dtype=np.int64)
        loss, weights = 0.0, 0.0
        with torch.no_grad():
            for images, masks in self.loader:
                logits = self.model(images.to(self.device)).float()
                total, weight = self.criterion.terms(logits, masks.to(self.device))
                loss, weights = loss + float(total), weights + float(weight)
                conf += confusion(logits.argmax(1).cpu().numpy(), masks.numpy(), self.info.num_classes)
        return OneShotScore(miou(conf), loss / max(weights, 1e-12))
