"""Graphviz drawings of decoded cells and of the UNet++ network (paper Figs. 8, 10, 11)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Optional

from hpcnas.space.genotype import Genotype
from hpcnas.space.topology import TOPOLOGIES, unetpp_nodes


def have_dot() -> bool:
    """Whether graphviz (the Python package and its ``dot`` program) can draw here (envs/setup.sh installs both)."""
    return shutil.which("dot") is not None and importlib.util.find_spec("graphviz") is not None


def _render(graph, path: Path) -> Optional[Path]:
    """Write ``path`` (PNG) and keep the ``.dot`` source beside it."""
    path.with_suffix(".dot").write_text(graph.source)
    graph.render(outfile=str(path), format="png", cleanup=True)
    return path


def draw_cell(genotype: Genotype, role: str, path: Path) -> Optional[Path]:
    """One cell type as a DAG: inputs, nodes with their chosen ops on the edges, output."""
    import graphviz

    kind = TOPOLOGIES[genotype.topology].cell_kind
    n_in = kind.inputs
    g = graphviz.Digraph(
        name=role, graph_attr={"rankdir": "LR", "label": f"{genotype.topology}: {role} cell", "fontsize": "14"}
    )
    g.attr("node", style="filled", fontname="Helvetica")
    names = ["c_{k-2}", "c_{k-1}"] if n_in == 2 else ["x"]
    for k, name in enumerate(names):
        g.node(str(k), name, fillcolor="darkseagreen2", shape="box")
    cell = genotype.cell(role)
    for j in range(len(cell)):
        g.node(str(j + n_in), str(j), fillcolor="lightblue", shape="circle")
    out = "c_{k}" if kind.concatenates else "sum + x" if kind.residual else "out"
    g.node("out", out, fillcolor="palegoldenrod", shape="box")
    used = set()
    for j, node in enumerate(cell):
        for op, src in node:
            g.edge(str(src), str(j + n_in), label=op, fontsize="10")
            used.add(src)
    for j in range(len(cell)):
        if kind.concatenates or (j + n_in) not in used:  # a concatenation of every node, or a sum of tower ends
            g.edge(str(j + n_in), "out", color="grey")
    if kind.residual:
        g.edge("0", "out", style="dashed", color="grey", label="residual", fontsize="9")
    return _render(g, path)


def draw_unetpp(genotype: Genotype, path: Path) -> Optional[Path]:
    """The UNet++ grid with the kept paths' edges highlighted."""
    import graphviz

    assert genotype.paths is not None, "a UNet++ genotype keeps its paths"
    depth = genotype.paths[0][-1][1]
    kept = {(a, b) for p in genotype.paths for a, b in zip(p, p[1:])}
    on_path = {n for p in genotype.paths for n in p}
    g = graphviz.Digraph(
        name="unetpp",
        graph_attr={
            "label": f"UNet++ network, {len(genotype.paths)} kept path(s)",
            "splines": "line",
            "nodesep": "0.6",
        },
    )
    g.attr("node", shape="circle", style="filled", fontname="Helvetica", fontsize="10")
    for i, j in unetpp_nodes(depth):
        colour = "lightblue" if (i, j) in on_path else "grey92"
        g.node(f"{i}_{j}", f"X{i},{j}", fillcolor=colour, pos=f"{j * 1.5},{-i * 1.2}!")
    for a, b in sorted(kept):
        g.edge(f"{a[0]}_{a[1]}", f"{b[0]}_{b[1]}", color="navy", penwidth="2")
    g.engine = "neato"
    return _render(g, path)
