"""Genotypes: the discrete architecture as plain data (no torch).

A genotype names its topology and op set, gives every cell type's nodes as
``(op, input)`` pairs, and, for UNet++, the network paths that were kept.  It
is what search writes, what evolution mutates, what ``train`` reads and what
``report`` draws; JSON round-trips it and validation turns any mistake into a
:class:`~hpcnas.errors.UserError` naming the key at fault.

Input indices inside a cell: a DARTS cell's inputs are 0 (grand-parent) and
1 (parent), its node ``j`` is index ``j + 2``; a ResNeXt cell's input is 0
and its node ``j`` is index ``j + 1``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hpcnas.errors import UserError, nearest

OP_SETS: Dict[str, Tuple[str, ...]] = {
    "O_base": ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "skip_connect", "none"),
    "O_large": (
        "conv2d_1", "conv2d_2", "conv2d_3", "depthconv2d_1", "depthconv2d_2", "depthconv2d_3",
        "splitconv2d_1", "splitconv2d_2", "splitconv2d_3", "skip", "cut",
    ),
}
ZERO_OPS = frozenset({"none", "cut"})  # never decoded, never sampled
SKIP_OPS = frozenset({"skip_connect", "skip"})
# Ops with no weights: what a collapsed DARTS cell is made of (skips and pooling win the softmax early).
PARAMETER_FREE_OPS = SKIP_OPS | {"avg_pool_3x3", "max_pool_3x3"} | ZERO_OPS


@dataclass(frozen=True)
class Topology:
    """Network structure + cell structure + default op set."""

    cell_kind: str  # "darts" or "resnext"
    cell_names: Tuple[str, str]  # (encoder cell type, decoder cell type)
    op_set: str
    nested: bool  # UNet++ (paths decoded) or U-Net


TOPOLOGIES: Dict[str, Topology] = {
    "darts_unet": Topology("darts", ("reduce", "normal"), "O_base", nested=False),
    "darts_unetpp": Topology("darts", ("reduce", "normal"), "O_base", nested=True),
    "resnext_unet": Topology("resnext", ("down", "up"), "O_large", nested=False),
}

Pair = Tuple[str, int]
Cell = Tuple[Tuple[Pair, ...], ...]
GridNode = Tuple[int, int]
Path_ = Tuple[GridNode, ...]


# --------------------------------------------------------------------------
# cell and grid structure shared by search, decode and networks


def cell_inputs(kind: str) -> int:
    """Number of cell inputs before the first node (DARTS 2, ResNeXt 1)."""
    return 2 if kind == "darts" else 1


def tower_input(node: int, tower_depth: int) -> int:
    """The fixed input index of ResNeXt node ``node``: the previous node of its tower."""
    return 0 if node % tower_depth == 0 else node  # node j has index j + 1, its predecessor index j


def unetpp_nodes(depth: int) -> List[GridNode]:
    """The UNet++ grid nodes X(i, j) in an order where every input comes first."""
    return [(i, j) for j in range(depth + 1) for i in range(depth + 1 - j)]


def unetpp_in_edges(node: GridNode) -> List[GridNode]:
    """Sources of X(i, j): down from X(i-1, 0) for j = 0; else up from X(i+1, j-1), then skips X(i, k<j)."""
    i, j = node
    if j == 0:
        return [(i - 1, 0)] if i > 0 else []
    return [(i + 1, j - 1)] + [(i, k) for k in range(j)]


def unetpp_paths(depth: int) -> List[Path_]:
    """Every path from the input node X(0, 0) to the output node X(0, depth)."""
    outs: Dict[GridNode, List[GridNode]] = {n: [] for n in unetpp_nodes(depth)}
    for n in unetpp_nodes(depth):
        for src in unetpp_in_edges(n):
            outs[src].append(n)
    target = (0, depth)
    paths: List[Path_] = []

    def walk(node: GridNode, trail: Tuple[GridNode, ...]) -> None:
        if node == target:
            paths.append(trail)
            return
        for nxt in outs[node]:
            walk(nxt, trail + (nxt,))

    walk((0, 0), ((0, 0),))
    return paths


# --------------------------------------------------------------------------
# the genotype


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture; hashable, so equal genotypes deduplicate."""

    topology: str
    op_set: str
    cells: Tuple[Tuple[str, Cell], ...]  # (cell type, nodes) in the topology's order
    paths: Optional[Tuple[Path_, ...]] = None  # UNet++ only

    def cell(self, name: str) -> Cell:
        """The nodes of cell type ``name``."""
        return dict(self.cells)[name]

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data."""
        out: Dict[str, Any] = {
            "topology": self.topology,
            "op_set": self.op_set,
            "cells": {name: [[[op, inp] for op, inp in node] for node in nodes] for name, nodes in self.cells},
        }
        if self.paths is not None:
            out["paths"] = [[list(n) for n in path] for path in self.paths]
        return out

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<genotype>") -> "Genotype":
        """Validate plain data and build a genotype (``UserError`` on any mistake)."""
        return _parse(raw, source)

    @classmethod
    def load(cls, path: str) -> "Genotype":
        """Read and validate a genotype JSON (or YAML) file."""
        p = Path(path)
        if p.is_dir():
            raise UserError("is a directory, not a genotype file", source=str(path))
        if not p.is_file():
            raise UserError("no such file", source=str(path))
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError("not UTF-8 text: a genotype is a JSON file", source=str(path)) from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            try:
                import yaml

                raw = yaml.safe_load(text)
            except Exception:
                raise UserError(f"malformed JSON (line {exc.lineno}: {exc.msg})", source=str(path)) from None
        return cls.from_dict(raw, source=str(path))

    def save(self, path) -> None:
        """Write as JSON, atomically."""
        from hpcnas.rundir import atomic_write_text

        atomic_write_text(path, self.to_json())

    def decoder_cell(self) -> Cell:
        """The cell type of the decoder (DARTS' normal cell, ResNeXt's up cell)."""
        return self.cells[1][1]

    def parameter_free_fraction(self) -> float:
        """The fraction of the decoder cell's edges whose op has no weights (skip, pooling)."""
        ops = [op for node in self.decoder_cell() for op, _ in node]
        return sum(op in PARAMETER_FREE_OPS for op in ops) / len(ops)

    def skip_count(self) -> int:
        """How many edges of the decoder cell are skip connections."""
        return sum(op in SKIP_OPS for node in self.decoder_cell() for op, _ in node)

    def describe(self) -> str:
        """A one-line summary for logs."""
        parts = [f"{name}: " + " | ".join("+".join(f"{op}<{i}" for op, i in node) for node in nodes) for name, nodes in self.cells]
        if self.paths:
            parts.append(f"{len(self.paths)} path(s)")
        return f"{self.topology} [" + "; ".join(parts) + "]"


def _parse(raw: Any, source: str) -> Genotype:
    def err(key: str, message: str) -> UserError:
        return UserError(message, source=source, key=key)

    if not isinstance(raw, dict):
        raise UserError("a genotype must be a mapping", source=source)
    for key in raw:
        if key not in ("topology", "op_set", "cells", "paths"):
            raise err(str(key), f"unknown key{nearest(str(key), ['topology', 'op_set', 'cells', 'paths'])}")
    topo_name = raw.get("topology")
    if topo_name not in TOPOLOGIES:
        raise err("topology", f"unknown topology {topo_name!r}{nearest(str(topo_name), TOPOLOGIES)} (known: {', '.join(TOPOLOGIES)})")
    topo = TOPOLOGIES[topo_name]
    op_set = raw.get("op_set", topo.op_set)
    if op_set not in OP_SETS:
        raise err("op_set", f"unknown op set {op_set!r} (known: {', '.join(OP_SETS)})")
    ops = OP_SETS[op_set]
    cells_raw = raw.get("cells")
    if not isinstance(cells_raw, dict):
        raise err("cells", f"expected a mapping of cell types {list(topo.cell_names)}")
    for name in cells_raw:
        if name not in topo.cell_names:
            raise err(f"cells.{name}", f"unknown cell type for {topo_name}{nearest(str(name), topo.cell_names)} (expected {list(topo.cell_names)})")
    cells = []
    n_in = cell_inputs(topo.cell_kind)
    for name in topo.cell_names:
        if name not in cells_raw:
            raise err(f"cells.{name}", "missing cell")
        nodes_raw = cells_raw[name]
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise err(f"cells.{name}", "expected a non-empty list of nodes")
        nodes = []
        for j, node_raw in enumerate(nodes_raw):
            key = f"cells.{name}[{j}]"
            if not isinstance(node_raw, list) or not node_raw:
                raise err(key, "expected a non-empty list of [op, input] pairs")
            if topo.cell_kind == "resnext" and len(node_raw) != 1:
                raise err(key, f"a ResNeXt node has exactly one input edge, got {len(node_raw)}")
            pairs = []
            for k, pair in enumerate(node_raw):
                pkey = f"{key}[{k}]"
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise err(pkey, "expected an [op, input] pair")
                op, inp = pair
                if op not in ops:
                    raise err(pkey, f"unknown op {op!r} for {op_set}{nearest(str(op), ops)}")
                if not isinstance(inp, int) or isinstance(inp, bool) or not 0 <= inp < j + n_in:
                    raise err(pkey, f"input {inp!r} out of range: node {j} may read inputs 0..{j + n_in - 1}")
                pairs.append((op, inp))
            nodes.append(tuple(pairs))
        cells.append((name, tuple(nodes)))
    paths = None
    if topo.nested:
        paths = _parse_paths(raw.get("paths"), source)
    elif raw.get("paths") is not None:
        raise err("paths", f"only UNet++ genotypes have paths, not {topo_name}")
    return Genotype(topo_name, op_set, tuple(cells), paths)


def _parse_paths(raw: Any, source: str) -> Tuple[Path_, ...]:
    if not isinstance(raw, list) or not raw:
        raise UserError("a UNet++ genotype needs a non-empty list of paths", source=source, key="paths")
    depth = None
    paths = []
    for p, path_raw in enumerate(raw):
        try:
            path = tuple((int(a), int(b)) for a, b in path_raw)
        except (TypeError, ValueError):
            raise UserError("expected a list of [level, column] nodes", source=source, key=f"paths[{p}]") from None
        if not path or path[0] != (0, 0) or path[-1][0] != 0:
            raise UserError("a path runs from [0, 0] to [0, depth]", source=source, key=f"paths[{p}]")
        d = path[-1][1]
        if depth is None:
            depth = d
        elif d != depth:
            raise UserError(f"ends at depth {d}, the first path at depth {depth}", source=source, key=f"paths[{p}]")
        for a, b in zip(path, path[1:]):
            if a not in unetpp_in_edges(b):
                raise UserError(f"{list(a)} -> {list(b)} is not a UNet++ edge", source=source, key=f"paths[{p}]")
        paths.append(path)
    return tuple(sorted(set(paths)))


def check_against_space(genotype: Genotype, topology: str, nodes: int, towers: int, tower_depth: int, depth: int, source: str) -> None:
    """Raise ``UserError`` when a genotype does not fit the configured space."""
    if genotype.topology != topology:
        raise UserError(f"genotype is {genotype.topology} but the config's space.topology is {topology}", source=source, key="topology")
    kind = TOPOLOGIES[topology].cell_kind
    expected = nodes if kind == "darts" else towers * tower_depth
    for name, cell in genotype.cells:
        if len(cell) != expected:
            what = "space.nodes" if kind == "darts" else "space.towers * space.tower_depth"
            raise UserError(f"has {len(cell)} nodes, the config's {what} gives {expected}", source=source, key=f"cells.{name}")
        if kind == "resnext":
            for j, ((_, inp),) in enumerate(cell):
                if inp != tower_input(j, tower_depth):
                    raise UserError(f"input {inp} breaks the tower structure (expected {tower_input(j, tower_depth)})", source=source, key=f"cells.{name}[{j}]")
    if genotype.paths is not None and genotype.paths[0][-1][1] != depth:
        raise UserError(f"paths end at depth {genotype.paths[0][-1][1]}, the config's space.depth is {depth}", source=source, key="paths")


# --------------------------------------------------------------------------
# sampling and mutation (the random baseline and evolution)


def sample_genotype(rng: random.Random, topology: str, op_set: Optional[str] = None, nodes: int = 4, towers: int = 4, tower_depth: int = 2, depth: int = 3, edges_per_node: int = 2) -> Genotype:
    """A uniformly random genotype: each node's ops (and DARTS inputs) drawn with replacement."""
    topo = TOPOLOGIES[topology]
    ops = [o for o in OP_SETS[op_set or topo.op_set] if o not in ZERO_OPS]
    cells = []
    for name in topo.cell_names:
        if topo.cell_kind == "darts":
            cell = tuple(tuple((rng.choice(ops), rng.randrange(j + 2)) for _ in range(edges_per_node)) for j in range(nodes))
        else:
            cell = tuple(((rng.choice(ops), tower_input(j, tower_depth)),) for j in range(towers * tower_depth))
        cells.append((name, cell))
    paths = None
    if topo.nested:
        every = unetpp_paths(depth)
        paths = tuple(sorted(set(rng.choice(every) for _ in range(rng.randint(1, 3)))))
    return Genotype(topology, op_set or topo.op_set, tuple(cells), paths)


def mutate_genotype(rng: random.Random, genotype: Genotype) -> Genotype:
    """A copy with exactly one change: one op, one DARTS input edge, or one UNet++ path."""
    topo = TOPOLOGIES[genotype.topology]
    ops = [o for o in OP_SETS[genotype.op_set] if o not in ZERO_OPS]
    kinds = ["op"] + (["input"] if topo.cell_kind == "darts" else []) + (["path"] if topo.nested else [])
    for _ in range(100):  # redraw until the mutation really changes something
        kind = rng.choice(kinds)
        if kind == "path":
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
            if kind == "op":
                op = rng.choice(ops)
            else:
                inp = rng.randrange(j + cell_inputs(topo.cell_kind))
            node = cell[j][:k] + ((op, inp),) + cell[j][k + 1 :]
            new_cell = cell[:j] + (node,) + cell[j + 1 :]
            cells = genotype.cells[:c] + ((name, new_cell),) + genotype.cells[c + 1 :]
            candidate = Genotype(genotype.topology, genotype.op_set, cells, genotype.paths)
        if candidate != genotype:
            return candidate
    return candidate
