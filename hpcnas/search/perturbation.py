"""Perturbation-based architecture selection (DARTS-PT: Wang et al., ICLR 2021, "Rethinking architecture
selection in differentiable NAS").

theta's largest weight need not be the op the supernet relies on most: the paper shows parameter-free ops
winning theta while removing them costs the supernet little.  DARTS-PT asks the supernet instead:

1. **Ops.**  The edges of every cell type, in a seeded random order: each candidate op of the edge is removed
   in turn (its weight set to 0, the others as theta has them) and the supernet measured on validation tiles.
   The edge keeps the op whose removal costs the most, and carries that op alone from then on; a few weight
   steps (``tune``) let the supernet adapt before the next edge.
2. **Inputs.**  Then, node by node, each input edge is removed in turn; the node keeps the ``K`` edges whose
   removal costs the most (eq. 12's K), the others are cut, and the weights tune again.

Every edge's removal is measured too (also at nodes with no more than K inputs), so the edges of the whole cell
compare.  The measured drops become op weights of the same shape as theta's (:func:`_scores`), so the
ordinary decode reads them: its caps on skips and parameter-free ops, K inputs per node and the UNet++ paths
(from theta's betas, which this does not measure) apply unchanged.

The paper measures accuracy; the search measures the class-weighted validation loss instead: the mIoU of a
supernet's argmax hardly moves when one op of one edge goes (on the smoke data every removal cost exactly 0),
while the loss moves with every change of the logits.

With partial channels (PC-DARTS) an edge's bypassed channels pass whatever its op weights, so removing an
op or an edge changes only the channels that go through the ops: the measured drops are of that share.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Dict, Iterable, List

import numpy as np
import torch

from hpcnas.space.networks import ArchParams
from hpcnas.space.topology import zero_ops

log = logging.getLogger("hpcnas")


def perturbation_snapshot(
    arch: ArchParams, kept_per_node: int, measure: Callable[[], float], tune: Callable[[], None], seed: int
) -> Dict[str, object]:
    """Select every cell type's ops and inputs by perturbation (module docstring); returns the decode snapshot.

    ``measure()`` scores the supernet as it stands, higher is better (the search: minus its validation loss);
    ``tune()`` takes a few weight steps.  The
    decisions are left in ``arch.fixed_rows`` (cleared by the caller when the supernet is to be used again).
    """
    zero = zero_ops(arch.op_names)
    candidates = [k for k, name in enumerate(arch.op_names) if name not in zero]
    device = arch.ops[arch.roles[0]].device
    op_drops = {role: np.full((sum(arch.node_inputs[role]), len(arch.op_names)), -np.inf) for role in arch.roles}
    order = [(role, e) for role in arch.roles for e in range(op_drops[role].shape[0])]
    random.Random(seed).shuffle(order)
    base = measure()
    for done, (role, edge) in enumerate(order, 1):
        op_drops[role][edge] = removal_drops(arch, role, edge, base, measure, candidates)
        chosen = max(candidates, key=lambda k: (op_drops[role][edge, k], -k))
        arch.fixed_rows[role][edge] = _one_hot(len(arch.op_names), chosen, device)
        tune()
        base = measure()
        log.info(
            "perturbation selection: %s edge %d keeps %s (its removal costs %.3g), %d/%d edges, score %.4f",
            role,
            edge,
            arch.op_names[chosen],
            op_drops[role][edge, chosen],
            done,
            len(order),
            base,
        )
    edge_drops: Dict[str, np.ndarray] = {}
    for role in arch.roles:
        drops = np.zeros(op_drops[role].shape[0])
        first = 0
        for count in arch.node_inputs[role]:
            chosen_rows = {e: arch.fixed_rows[role][e] for e in range(first, first + count)}
            for e in range(first, first + count):
                arch.fixed_rows[role][e] = torch.zeros_like(chosen_rows[e])
                drops[e] = base - measure()
                arch.fixed_rows[role][e] = chosen_rows[e]
            if count > kept_per_node:
                kept = sorted(range(first, first + count), key=lambda e: (-drops[e], e))[:kept_per_node]
                for e in set(range(first, first + count)) - set(kept):
                    arch.fixed_rows[role][e] = torch.zeros_like(chosen_rows[e])
                tune()
                base = measure()
            first += count
        edge_drops[role] = drops
    return {
        "ops": _scores(op_drops, edge_drops),
        "edges": None,
        "betas": arch.snapshot()["betas"],
        "drops": {
            "ops": {role: np.where(np.isfinite(d), d, np.nan) for role, d in op_drops.items()},
            "edges": edge_drops,
        },
    }


def removal_drops(
    arch: ArchParams,
    role: str,
    edge: int,
    base: float,
    measure: Callable[[], float],
    ops: Iterable[int],
) -> np.ndarray:
    """What removing each of ``ops`` (column indices) from one edge costs the supernet: ``base - measure()`` with
    that op's weight set to 0 and the others as theta has them, one op at a time; -inf for the other columns (not
    measured). The edge's fixed row is left as it was."""
    theta_row = arch.op_weights(role).detach()[edge]
    fixed = arch.fixed_rows.setdefault(role, {})
    before = fixed.get(edge)
    drops = np.full(len(arch.op_names), -np.inf)
    try:
        for k in ops:
            without = theta_row.clone()
            without[k] = 0.0
            fixed[edge] = without
            drops[k] = base - measure()
    finally:
        if before is None:
            del fixed[edge]
        else:
            fixed[edge] = before
    return drops


def _scores(op_drops: Dict[str, np.ndarray], edge_drops: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Op weights for the decode: an edge's chosen op weighs ``exp(edge drop / spread)`` (relative to the largest
    edge drop), so the decode's strongest inputs and its weakest capped edge follow the edge drops; its other ops
    weigh less by ``exp(op drop / spread)`` each, the order a cap falls back in."""
    op_spread = _spread(list(op_drops.values()))
    edge_spread = _spread(list(edge_drops.values()))
    top_edge = max(float(d.max()) for d in edge_drops.values())
    scores = {}
    for role, drops in op_drops.items():
        within = np.exp((drops - drops.max(axis=1, keepdims=True)) / op_spread)  # -inf (never measured): 0
        scores[role] = within * np.exp((edge_drops[role] - top_edge) / edge_spread)[:, None]
    return scores


def _one_hot(size: int, index: int, device: torch.device) -> torch.Tensor:
    row = torch.zeros(size, device=device)
    row[index] = 1.0
    return row


def _spread(drops: List[np.ndarray]) -> float:
    """The standard deviation of every measured drop (1 when they are all equal): the softmax's temperature,
    so that the scores do not depend on the scale of the metric."""
    values = np.concatenate([np.ravel(d) for d in drops]) if drops else np.zeros(0)
    finite = values[np.isfinite(values)]
    spread = float(finite.std()) if finite.size else 0.0
    return spread if spread > 1e-12 else 1.0
