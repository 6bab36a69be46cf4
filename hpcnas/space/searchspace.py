"""The search space as one object (no torch): built once from ``cfg.space``, asked by everyone else.

It owns the topology and op set, the cell kind's rules (node inputs, tower
sources), sampling, mutation and validation of genotypes.  Networks, decoding,
strategies and the report ask it instead of branching on names.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from hpcnas.errors import UserError
from hpcnas.plugins import check_op_set
from hpcnas.space.genotype import Genotype
from hpcnas.space.topology import (
    OP_SETS,
    TOPOLOGIES,
    CellKind,
    CellShape,
    Path_,
    Topology,
    auto_blocks,
    unetpp_paths,
    zero_ops,
)


@dataclass(frozen=True)
class SearchSpace:
    """A topology, an op set, the cells' shape, the network depth, and whether each level has its own cell."""

    topology: Topology
    op_set: str
    shape: CellShape
    depth: int
    per_stage: bool = False  # space.cells: per_stage (one theta and one genotype cell per level) or shared
    # space.searchable: the cell types searched, of a topology with hand-designed defaults; None: every type
    searchable: Optional[Tuple[str, ...]] = None

    @classmethod
    def of(
        cls,
        topology: str,
        op_set: Optional[str] = None,
        nodes: int = 4,
        towers: int = 4,
        tower_depth: int = 2,
        depth: int = 3,
        edges_per_node: int = 2,
        per_stage: bool = False,
        searchable: Optional[Sequence[str]] = None,
    ) -> "SearchSpace":
        """The space of a topology by name (its own op set unless ``op_set`` is given)."""
        topo = TOPOLOGIES[topology]
        check_op_set(op_set or topo.op_set)
        topo.check_candidates(op_set or topo.op_set)
        topo.check_searchable(searchable)
        shape = CellShape(nodes, towers, tower_depth, edges_per_node)
        chosen = tuple(searchable) if searchable is not None else None
        return cls(topo, op_set or topo.op_set, shape, depth, per_stage, chosen)

    @classmethod
    def from_config(cls, cfg) -> "SearchSpace":
        """The space of a run's configuration (``space`` and ``search.decode.edges_per_node``)."""
        sp = cfg.space
        return cls.of(
            sp.topology,
            sp.op_set,
            sp.nodes,
            sp.towers,
            sp.tower_depth,
            sp.depth,
            cfg.search.decode.edges_per_node,
            per_stage=sp.cells == "per_stage",
            searchable=None if auto_blocks(sp.searchable) else sp.searchable,  # auto:K: a supernet of every block
        )

    # -- structure --------------------------------------------------------------

    @property
    def kind(self) -> CellKind:
        """The cell kind's rules."""
        return self.topology.cell_kind

    def roles(self) -> Tuple[str, ...]:
        """The roles searched (one per cell type, or one per cell type and level), encoder first."""
        return self.topology.roles(self.depth, self.per_stage, self.searchable)

    @property
    def ops(self) -> Tuple[str, ...]:
        """Every op of the op set (the mixed op's candidates), zero ops included."""
        return OP_SETS[self.op_set]

    @property
    def sampled_ops(self) -> List[str]:
        """The ops a discrete architecture may hold (no zero op)."""
        zero = zero_ops(self.ops)
        return [op for op in self.ops if op not in zero]

    def node_count(self) -> int:
        """Intermediate nodes per cell."""
        return self.kind.node_count(self.shape)

    def sources(self, node: int) -> List[int]:
        """The states node ``node`` of a cell may read."""
        return self.kind.sources(self.shape, node)

    def node_inputs(self) -> List[int]:
        """Search edges per node, in node order."""
        return self.kind.node_inputs(self.shape)

    def kept_per_node(self) -> int:
        """Input edges per node of a discrete cell."""
        return self.kind.kept_per_node(self.shape)

    def stride(self) -> int:
        """Input sizes must be multiples of this."""
        return self.topology.stride(self.depth)

    def paths(self) -> List[Path_]:
        """UNet++: every input -> output path of the grid (empty for a U-Net)."""
        return unetpp_paths(self.depth) if self.topology.nested else []

    def count(self) -> int:
        """How many distinct genotypes :meth:`sample` can draw (ordered edges, 1 to 3 UNet++ paths)."""
        per_cell = 1
        for j in range(self.node_count()):
            choices = len(self.sampled_ops) * (len(self.sources(j)) if self.kind.free_inputs else 1)
            per_cell *= choices ** self.kept_per_node()
        total = per_cell ** len(self.roles())
        if self.topology.nested:
            n = len(self.paths())
            total *= sum(math.comb(n, k) for k in range(1, 4))
        return total

    # -- genotypes --------------------------------------------------------------

    def sample(self, rng: random.Random) -> Genotype:
        """A uniformly random genotype: each node's ops (and free inputs) drawn with replacement."""
        ops = self.sampled_ops
        cells = []
        for name in self.roles():
            nodes = []
            for j in range(self.node_count()):
                sources = self.sources(j)
                pairs = []
                for _ in range(self.kept_per_node()):
                    op = rng.choice(ops)
                    pairs.append((op, sources[rng.randrange(len(sources))] if self.kind.free_inputs else sources[0]))
                nodes.append(tuple(pairs))
            cells.append((name, tuple(nodes)))
        paths = None
        if self.topology.nested:
            every = self.paths()
            paths = tuple(sorted(set(rng.choice(every) for _ in range(rng.randint(1, 3)))))
        return Genotype(self.topology.name, self.op_set, tuple(cells), paths)

    def mutate(self, rng: random.Random, genotype: Genotype) -> Genotype:
        """A copy of ``genotype`` with exactly one change: one op, one free input edge, or one UNet++ path."""
        zero = zero_ops(OP_SETS[genotype.op_set])
        ops = [o for o in OP_SETS[genotype.op_set] if o not in zero]
        kinds = ["op"] + (["input"] if self.kind.free_inputs else []) + (["path"] if self.topology.nested else [])
        candidate = genotype
        for _ in range(100):  # redraw until the mutation really changes something
            change = rng.choice(kinds)
            if change == "path":
                assert genotype.paths is not None  # "path" is a choice for nested topologies only
                every = unetpp_paths(genotype.paths[0][-1][1])
                paths = list(genotype.paths)
                paths[rng.randrange(len(paths))] = rng.choice(every)
                candidate = Genotype(genotype.topology, genotype.op_set, genotype.cells, tuple(sorted(set(paths))))
            else:
                c = rng.randrange(len(genotype.cells))
                name, cell = genotype.cells[c]
                j = rng.randrange(len(cell))
                k = rng.randrange(len(cell[j]))
                op, inp = cell[j][k]
                if change == "op":
                    op = rng.choice(ops)
                else:
                    sources = self.kind.sources(self.shape, j)
                    inp = sources[rng.randrange(len(sources))]
                node = cell[j][:k] + ((op, inp),) + cell[j][k + 1 :]
                cells = genotype.cells[:c] + ((name, cell[:j] + (node,) + cell[j + 1 :]),) + genotype.cells[c + 1 :]
                candidate = Genotype(genotype.topology, genotype.op_set, cells, genotype.paths)
            if candidate != genotype:
                return candidate
        return candidate

    def check(self, genotype: Genotype, source: str) -> None:
        """Raise ``UserError`` when a genotype does not fit this space."""
        if genotype.topology != self.topology.name:
            raise UserError(
                f"genotype is {genotype.topology} but the config's space.topology is {self.topology.name}",
                source=source,
                key="topology",
            )
        expected = self.node_count()
        for name, cell in genotype.cells:
            if len(cell) != expected:
                raise UserError(
                    f"has {len(cell)} nodes, the config's {self.kind.size_keys} gives {expected}",
                    source=source,
                    key=f"cells.{name}",
                )
            problem = self.kind.problem(cell, self.shape)
            if problem is not None:
                raise UserError(problem[1], source=source, key=f"cells.{name}[{problem[0]}]")
        implied = genotype.depth()
        optional = self.topology.default_cell(genotype.cells[0][0]) is not None  # roles may be left out
        if implied is not None and (implied > self.depth if optional else implied != self.depth):
            raise UserError(
                f"has a cell for each of {genotype.depth()} levels, the config's space.depth is {self.depth}",
                source=source,
                key="cells",
            )
        if genotype.paths is not None and genotype.paths[0][-1][1] != self.depth:
            raise UserError(
                f"paths end at depth {genotype.paths[0][-1][1]}, the config's space.depth is {self.depth}",
                source=source,
                key="paths",
            )
