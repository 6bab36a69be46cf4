"""One-shot estimates: a genotype's validation mIoU in a trained supernet, its weights inherited.

Weight sharing (ENAS; Bender et al., "Understanding and simplifying one-shot architecture search") ranks
architectures without training each one: the supernet of a finished search holds every op of every edge, so a
genotype of its space is scored by switching off, on every edge, the ops the genotype does not choose (and the
edges it does not keep), then validating what is left. ``benchmarks/quality.py --fidelity`` measures how far this
ranks architectures as their retrained test mIoU does.

What is left is the supernet restricted to the genotype's ops, not the discrete network: with partial channels
an edge's bypassed channels still pass, and the edge weights (PC-DARTS) and the UNet++ path weights stay as the
search left them. The BatchNorm statistics are the supernet's own, as in its validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

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


def one_shot_scores(
    search_run: Path,
    genotypes: Sequence[Genotype],
    data_path: Optional[str] = None,
    max_tiles: Optional[int] = None,
    device: str = "cpu",
) -> List[OneShotScore]:
    """Each genotype's validation figures in the trained supernet of ``search_run`` (a ``hpcnas search`` run
    directory), on ``data_path`` (default: the data the search ran on) or its first ``max_tiles`` validation
    tiles. A genotype of another space is a :class:`UserError`."""
    run = RunDir(search_run)
    cfg = load_config(str(run.config))
    if data_path is None:
        data_path = str(json.loads(run.data_fingerprint.read_text())["path"])
    info = read_info(data_path)
    space = SearchSpace.from_config(cfg)
    for genotype in genotypes:
        space.check(genotype, source=str(search_run))
    torch_device = select_device(device)
    model = build_supernet(cfg, info, torch_device)
    state = load_checkpoint(run.latest, torch_device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(
            f"checkpoint does not match the run's supernet ({str(exc).splitlines()[0][:200]})", source=str(run.latest)
        ) from None
    loader = validation_loader(data_path, cfg.search.batch_size, max_tiles=max_tiles)
    if loader is None:
        raise UserError("one-shot scores validate the supernet, and the validation split is empty", source=data_path)
    criterion = WeightedCrossEntropy(info.class_weights, torch_device, SingleProcess())
    model.eval()
    scores = []
    try:
        with torch.no_grad():
            for genotype in genotypes:
                model.arch.fixed_rows = {
                    role: {edge: row.to(torch_device) for edge, row in edges.items()}
                    for role, edges in genotype_rows(space, genotype, model.arch.roles).items()
                }
                conf = np.zeros((info.num_classes, info.num_classes), dtype=np.int64)
                loss, weights = 0.0, 0.0
                for images, masks in loader:
                    logits = model(images.to(torch_device)).float()
                    total, weight = criterion.terms(logits, masks.to(torch_device))
                    loss, weights = loss + float(total), weights + float(weight)
                    conf += confusion(logits.argmax(1).cpu().numpy(), masks.numpy(), info.num_classes)
                scores.append(OneShotScore(miou(conf), loss / max(weights, 1e-12)))
    finally:
        model.arch.fixed_rows = {}
    return scores
