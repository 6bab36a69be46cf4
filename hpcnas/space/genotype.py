"""Genotypes: the discrete architecture as plain data (no torch).

A genotype names its topology and op set, gives every cell type's nodes as
``(op, input)`` pairs, and, for UNet++, the network paths that were kept.  It
is what search writes, what evolution mutates, what ``train`` reads and what
``report`` draws; JSON round-trips it and validation turns any mistake into a
:class:`~hpcnas.errors.UserError` naming the key at fault.

Input indices inside a cell follow :mod:`hpcnas.space.topology`: the cell's
inputs first, then its nodes.  Checking a genotype against a configured
space, sampling and mutating are :class:`~hpcnas.space.searchspace.SearchSpace`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hpcnas.errors import UserError, nearest
from hpcnas.space.topology import (  # noqa: F401 - re-exported: the vocabulary genotypes are written in
    OP_SETS,
    TOPOLOGIES,
    Cell,
    GridNode,
    Pair,
    Path_,
    parameter_free_ops,
    skip_ops,
    split_role,
    unetpp_in_edges,
    unetpp_nodes,
    unetpp_paths,
)

# --------------------------------------------------------------------------
# the genotype


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture; hashable, so equal genotypes deduplicate."""

    topology: str
    op_set: str
    cells: Tuple[Tuple[str, Cell], ...]  # (role, nodes) in the topology's order (roles: see Topology)
    paths: Optional[Tuple[Path_, ...]] = None  # UNet++ only

    def cell(self, role: str) -> Cell:
        """The nodes of the cells of ``role`` (a role the genotype leaves out: its topology's hand-designed cell)."""
        cell = dict(self.cells).get(role) or TOPOLOGIES[self.topology].default_cell(role)
        if cell is None:
            raise KeyError(role)
        return cell

    @property
    def per_stage(self) -> bool:
        """Whether each resolution level has its own cell (else one cell per type, shared by every level)."""
        return split_role(self.cells[0][0])[1] is not None

    def depth(self) -> Optional[int]:
        """The network depth a per-stage genotype was made for (None: shared cells fit any depth)."""
        return _implied_depth(TOPOLOGIES[self.topology], [role for role, _ in self.cells]) if self.per_stage else None

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

    def decoder_cells(self) -> List[Cell]:
        """The decoder cells (DARTS' normal cell, ResNeXt's up cell): one, or one per level."""
        topo = TOPOLOGIES[self.topology]
        return [cell for role, cell in self.cells if topo.is_decoder(role)]

    def parameter_free_fraction(self) -> float:
        """The fraction of the decoder cells' edges whose op has no weights (skip, pooling); 0 without any."""
        ops = [op for cell in self.decoder_cells() for node in cell for op, _ in node]
        free = parameter_free_ops(ops)
        return sum(op in free for op in ops) / max(len(ops), 1)

    def skip_count(self) -> int:
        """How many edges of a decoder cell are skip connections (per-stage cells: the most any one holds)."""
        counts = []
        for cell in self.decoder_cells():
            ops = [op for node in cell for op, _ in node]
            skips = skip_ops(ops)
            counts.append(sum(op in skips for op in ops))
        return max(counts, default=0)

    def describe(self) -> str:
        """A one-line summary for logs."""
        parts = [
            f"{name}: " + " | ".join("+".join(f"{op}<{i}" for op, i in node) for node in nodes)
            for name, nodes in self.cells
        ]
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
    topo_name = str(raw.get("topology"))
    TOPOLOGIES.check(topo_name, source, key="topology")
    topo = TOPOLOGIES[topo_name]
    op_set = raw.get("op_set", topo.op_set)
    OP_SETS.check(op_set, source, key="op_set")
    ops = OP_SETS[op_set]
    cells_raw = raw.get("cells")
    if not isinstance(cells_raw, dict) or not cells_raw:
        raise err("cells", f"expected a mapping of cell types {list(topo.cell_names)}")
    roles = _roles(topo, [str(name) for name in cells_raw], topo_name, err)
    cells = []
    n_in = topo.cell_kind.inputs
    for name in roles:
        if name not in cells_raw:
            if topo.default_cell(name) is not None:  # a block left hand-designed
                continue
            raise err(f"cells.{name}", "missing cell")
        nodes_raw = cells_raw[name]
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise err(f"cells.{name}", "expected a non-empty list of nodes")
        nodes = []
        for j, node_raw in enumerate(nodes_raw):
            key = f"cells.{name}[{j}]"
            if not isinstance(node_raw, list) or not node_raw:
                raise err(key, "expected a non-empty list of [op, input] pairs")
            if not topo.cell_kind.free_inputs and len(node_raw) != 1:
                raise err(key, f"a {topo.cell_kind.name} node has exactly one input edge, got {len(node_raw)}")
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


def _implied_depth(topo, roles: List[str]) -> int:
    """The depth per-stage roles imply: encoder cells make levels 1..D, the others work at 0..D-1."""
    return max((topo.depth_of(role) for role in roles if split_role(role)[1] is not None), default=1)


def _roles(topo, names: List[str], topo_name: str, err) -> Tuple[str, ...]:
    """The roles a genotype's cells must have: one per cell type, or (per-stage) one per type and level."""
    per_stage = any("@" in name for name in names)
    expected = topo.roles(_implied_depth(topo, names), per_stage)
    for name in names:
        if name not in expected:
            shape = "a cell type@level" if per_stage else "a cell type"
            raise err(
                f"cells.{name}",
                f"unknown cell for {topo_name}{nearest(name, list(expected))} (expected {shape}: {list(expected)})",
            )
    return expected


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
