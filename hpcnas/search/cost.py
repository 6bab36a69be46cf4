"""A resource term in the architecture loss (FBNet-style): the expected cost of the mixed ops under theta.

Every mixed op's candidates get a cost once, in a lookup table: ``params``
counts the weights the op has at full width in a discrete network,
``latency`` times its forward pass at the edge's input size on the search's
device.  The term is ``sum over edges and ops of w_op * cost``, with ``w``
the op weights of the edge's cell type, divided by its value under uniform
weights, so that it starts at 1 whatever the space's size and
``search.cost.weight`` means the same for every space.  Its gradient pulls
theta toward cheaper ops.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from hpcnas.plugins import COSTS
from hpcnas.space.cells import GraphCell
from hpcnas.space.mixed import MixedOp
from hpcnas.space.networks import SearchNetwork
from hpcnas.space.ops import build_op
from hpcnas.train.complexity import median_forward_ms


def params_cost(name: str, channels: int, stride: int, shape: Tuple[int, ...], device: torch.device) -> float:
    """The cost ``params``: the weights of op ``name`` on one edge."""
    return float(sum(p.numel() for p in build_op(name, channels, stride, affine=True).parameters()))


def latency_cost(
    name: str, channels: int, stride: int, shape: Tuple[int, ...], device: torch.device, runs: int = 5
) -> float:
    """The cost ``latency``: op ``name``'s median forward time (ms) on one edge's input shape, on ``device``."""
    op = build_op(name, channels, stride, affine=True).to(device)
    return median_forward_ms(op, torch.zeros((1, channels) + tuple(shape[2:]), device=device), runs, warmup=2)


def _edges_by_role(model: SearchNetwork) -> Dict[str, List[MixedOp]]:
    """Every mixed op of each cell type, cell after cell, each cell's edges in the order of its weight rows."""
    out: Dict[str, List[MixedOp]] = {}
    for module in model.net.modules():
        if isinstance(module, GraphCell) and getattr(module, "role", None) is not None:
            out.setdefault(module.role, []).extend(m for node in module.edges for m in node if isinstance(m, MixedOp))
    return out


class ExpectedCost:
    """``cost()`` is the expected cost under the current theta relative to uniform theta (differentiable)."""

    def __init__(self, model: SearchNetwork, kind: str, sample_input: torch.Tensor):
        measure = COSTS[kind]
        self.model = model
        shapes: Dict[int, Tuple[int, ...]] = {}

        def record_shape(module, args) -> None:  # a pre-hook that returned a value would replace the inputs
            shapes.setdefault(id(module), tuple(args[0].shape))

        hooks = [m.register_forward_pre_hook(record_shape) for m in model.modules() if isinstance(m, MixedOp)]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(sample_input[:1])
        model.train(was_training)
        for hook in hooks:
            hook.remove()
        device = sample_input.device
        cache: Dict[tuple, float] = {}
        self.tables: Dict[str, torch.Tensor] = {}
        for role, edges in _edges_by_role(model).items():
            rows = model.arch.ops[role].shape[0]
            table = torch.zeros(rows, len(edges[0].op_names))
            for k, edge in enumerate(edges):
                for o, name in enumerate(edge.op_names):
                    key = (name, edge.channels, edge.stride, shapes[id(edge)][2:])
                    if key not in cache:
                        cache[key] = measure(name, edge.channels, edge.stride, shapes[id(edge)], device)
                    table[k % rows, o] += cache[key]
            self.tables[role] = table.to(device)
        with torch.no_grad():
            self.uniform = float(sum(t.mean(dim=1).sum() for t in self.tables.values())) or 1.0

    def __call__(self) -> torch.Tensor:
        arch = self.model.arch
        total = sum((arch.weights(arch.ops[role]) * table).sum() for role, table in self.tables.items())
        return total / self.uniform
