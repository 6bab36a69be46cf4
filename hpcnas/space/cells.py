"""Cells: the DARTS cell and the ResNeXt-like cell, each in a search and a discrete form.

A cell is a small DAG.  Its states start with the preprocessed inputs; each
node sums its input edges; an edge applies an op (a single op in a discrete
cell, a :class:`MixedOp` in a search cell) to an earlier state.

* DARTS cell: inputs grand-parent (0) and parent (1), ``nodes`` intermediate
  nodes, output = concatenation of the nodes.  In a reduction cell the edges
  from the inputs have stride 2.  In search every node reads every earlier
  state, weighted by edge normalization (eq. 8) when it is on.
* ResNeXt cell: one input (several are concatenated first), parallel towers
  where every node has one input edge (so no edge normalization), output =
  sum of the tower ends + the (strided) input: a residual block.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from hpcnas.plugins import CELL_MODULES
from hpcnas.space.mixed import MixedOp
from hpcnas.space.ops import FactorizedReduce, ReLUConvBN, build_op
from hpcnas.space.searchspace import SearchSpace
from hpcnas.space.topology import CELL_KINDS, Cell, CellKind

Edge = Tuple[int, nn.Module]  # (index of the input state, module)


class CellArch:
    """Architecture weights for one search cell's forward pass.

    ``ops``: (edges, |O|) op weights in edge order; ``edges``: per node, the
    weights of its input edges (edge normalization), or ``None``.
    """

    def __init__(self, ops: torch.Tensor, edges: Optional[Sequence[torch.Tensor]] = None):
        self.ops, self.edges = ops, edges


class GraphCell(nn.Module):
    """The DAG evaluation shared by both cell kinds."""

    kind: CellKind
    role: Optional[str] = None  # whose architecture weights it uses: a cell type or type@level (set by the builder)

    def __init__(self, nodes: List[List[Edge]], out_channels: int):
        super().__init__()
        self.n_inputs = self.kind.inputs
        self.sources = [[src for src, _ in node] for node in nodes]
        self.edges = nn.ModuleList(nn.ModuleList(m for _, m in node) for node in nodes)
        self.out_channels = out_channels

    def run_nodes(self, states: List[torch.Tensor], arch: Optional[CellArch]) -> List[torch.Tensor]:
        """Append every node's output to ``states`` (inputs first) and return it."""
        e = 0
        for j, (sources, modules) in enumerate(zip(self.sources, self.edges)):
            total = 0
            for k, (src, module) in enumerate(zip(sources, modules)):
                if arch is None:
                    y = module(states[src])
                else:
                    y = module(states[src], arch.ops[e])
                    if arch.edges is not None:
                        y = y * arch.edges[j][k]
                total = total + y
                e += 1
            states.append(total)
        return states

    @classmethod
    def build(
        cls,
        edges: List[List[Edge]],
        in_channels: Sequence[int],
        c: int,
        reduction: bool,
        reduce_prev: bool,
        affine: bool,
    ) -> "GraphCell":
        """The cell over ``edges`` with its input preprocessing."""
        raise NotImplementedError


class DartsCell(GraphCell):
    """DARTS cell over inputs (grand-parent, parent); see the module docstring."""

    kind = CELL_KINDS["darts"]

    def __init__(self, nodes: List[List[Edge]], c_prev_prev: int, c_prev: int, c: int, reduce_prev: bool, affine: bool):
        super().__init__(nodes, c * len(nodes))
        self.pre0 = (
            FactorizedReduce(c_prev_prev, c, affine) if reduce_prev else ReLUConvBN(c_prev_prev, c, 1, affine=affine)
        )
        self.pre1 = ReLUConvBN(c_prev, c, 1, affine=affine)

    def forward(self, inputs: Sequence[torch.Tensor], arch: Optional[CellArch] = None) -> torch.Tensor:
        states = self.run_nodes([self.pre0(inputs[-2]), self.pre1(inputs[-1])], arch)
        return torch.cat(states[self.n_inputs :], dim=1)

    @classmethod
    def build(cls, edges, in_channels, c, reduction, reduce_prev, affine):
        return cls(edges, in_channels[-2], in_channels[-1], c, reduce_prev, affine)


class ResNeXtCell(GraphCell):
    """ResNeXt-like residual block of towers; see the module docstring."""

    kind = CELL_KINDS["resnext"]

    def __init__(self, nodes: List[List[Edge]], c_in: int, c: int, reduction: bool, affine: bool):
        super().__init__(nodes, c)
        self.pre = ReLUConvBN(c_in, c, 1, affine=affine)
        self.shortcut = FactorizedReduce(c, c, affine) if reduction else nn.Identity()
        used = {src for node in self.sources for src in node}
        self.leaves = [j + 1 for j in range(len(nodes)) if j + 1 not in used]

    def forward(self, inputs: Sequence[torch.Tensor], arch: Optional[CellArch] = None) -> torch.Tensor:
        x = self.pre(inputs[0] if len(inputs) == 1 else torch.cat(list(inputs), dim=1))
        states = self.run_nodes([x], arch)
        return self.shortcut(x) + sum(states[i] for i in self.leaves)

    @classmethod
    def build(cls, edges, in_channels, c, reduction, reduce_prev, affine):
        return cls(edges, sum(in_channels), c, reduction, affine)


# --------------------------------------------------------------------------
# builders


def _stride(kind: CellKind, src: int, reduction: bool) -> int:
    return 2 if kind.reduces and reduction and src < kind.inputs else 1


def search_edges(
    space: SearchSpace, c: int, reduction: bool, partial: int, generator, sampling: str = "shuffle"
) -> List[List[Edge]]:
    """Mixed-op edges from every state a node may read."""
    kind = space.kind
    return [
        [
            (s, MixedOp(space.ops, c, _stride(kind, s, reduction), partial, generator, sampling))
            for s in space.sources(j)
        ]
        for j in range(space.node_count())
    ]


def discrete_edges(kind: CellKind, cell: Cell, c: int, reduction: bool) -> List[List[Edge]]:
    """Single-op edges from a genotype cell."""
    return [[(src, build_op(op, c, _stride(kind, src, reduction), affine=True)) for op, src in node] for node in cell]


def make_cell(
    kind: CellKind,
    edges: List[List[Edge]],
    in_channels: Sequence[int],
    c: int,
    reduction: bool,
    reduce_prev: bool,
    affine: bool,
) -> GraphCell:
    """Wrap edges into the cell module of their kind, with its input preprocessing."""
    return CELL_MODULES[kind.name].build(edges, in_channels, c, reduction, reduce_prev, affine)
