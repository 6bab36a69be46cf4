"""Perturbation-based selection (DARTS-PT): the op whose removal costs the most wins, then the inputs whose
removal costs the most; the decode rules apply to the measured drops; a real search selects this way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hpcnas.pipeline import search
from hpcnas.rundir import RunDir
from hpcnas.search.decode import decode_genotype
from hpcnas.search.perturbation import perturbation_snapshot
from hpcnas.space.genotype import Genotype
from hpcnas.space.networks import ArchParams
from hpcnas.space.searchspace import SearchSpace
from hpcnas.space.topology import parameter_free_ops
from tests.search.test_collapse import SMOKE, TINY

ROLES = tuple(SearchSpace.of("darts_unet", "O_base", depth=2, nodes=3).topology.cell_names)


def _space() -> SearchSpace:
    return SearchSpace.of("darts_unet", "O_base", depth=2, nodes=3)


def _linear_supernet(space: SearchSpace, seed: int = 0):
    """Architecture parameters whose 'supernet' scores sum(importance * weight) over every edge and op: removing
    op o of edge e costs importance[e, o] * (its weight), so the right decisions are known in advance."""
    counts = space.node_inputs()
    arch = ArchParams("simplex", {role: counts for role in ROLES}, space.ops, edge_norm=False)
    rng = np.random.default_rng(seed)
    importance = {role: rng.uniform(0, 1, (sum(counts), len(space.ops))) for role in ROLES}

    def measure() -> float:
        total = 0.0
        for role in ROLES:
            weights = arch.cell_arch(role).ops.detach().numpy()
            total += float((importance[role] * weights).sum())
        return total

    return arch, importance, measure


def test_each_edge_keeps_the_op_whose_removal_costs_most_and_each_node_its_costliest_inputs():
    space = _space()
    arch, importance, measure = _linear_supernet(space)
    tunes = []
    snapshot = perturbation_snapshot(arch, space.kept_per_node(), measure, lambda: tunes.append(1), seed=3)
    edges = sum(space.node_inputs())
    nodes_to_cut = sum(1 for n in space.node_inputs() if n > space.kept_per_node())
    assert len(tunes) == len(ROLES) * (edges + nodes_to_cut)  # after every decision
    none = space.ops.index("none")
    for role in ROLES:
        op_drops = snapshot["drops"]["ops"][role]
        assert np.isnan(op_drops[:, none]).all()  # never measured: decode never picks it
        uniform = 1 / len(space.ops)  # theta untouched: removing op o costs importance * 1/|O|
        expected = np.delete(importance[role], none, axis=1) * uniform
        np.testing.assert_allclose(np.delete(op_drops, none, axis=1), expected, rtol=1e-5)
    genotype = decode_genotype(space, snapshot)
    for (role, cell), role_name in zip(genotype.cells, ROLES):
        assert role == role_name
        chosen = {}
        first = 0
        for j, count in enumerate(space.node_inputs()):
            rows = importance[role][first : first + count].copy()
            rows[:, none] = -np.inf
            best_ops = rows.argmax(1)
            # an edge's removal, once every edge holds its one op, costs the importance of that op
            strongest = sorted(range(count), key=lambda k: (-rows[k, best_ops[k]], k))[: space.kept_per_node()]
            chosen[j] = tuple(sorted((space.ops[best_ops[k]], space.sources(j)[k]) for k in strongest))
            first += count
        assert {j: tuple(sorted(node)) for j, node in enumerate(cell)} == chosen


def test_the_decode_caps_apply_to_the_measured_drops():
    space = _space()
    arch, importance, measure = _linear_supernet(space, seed=1)
    parameter_free = parameter_free_ops(space.ops)
    free = [k for k, op in enumerate(space.ops) if op in parameter_free]
    for role in ROLES:
        importance[role][:, free] += 10.0  # the supernet relies on its parameter-free ops everywhere
    snapshot = perturbation_snapshot(arch, space.kept_per_node(), measure, lambda: None, seed=0)
    uncapped = decode_genotype(space, snapshot)
    capped = decode_genotype(space, snapshot, max_parameter_free=0.5, max_parameter_free_other=0.5)
    for (_, cell), limit in zip(capped.cells, (0.5, 0.5)):
        ops = [op for node in cell for op, _ in node]
        assert sum(op in parameter_free for op in ops) <= limit * len(ops)
    free_uncapped = [op for _, cell in uncapped.cells for node in cell for op, _ in node]
    assert all(op in parameter_free for op in free_uncapped)


def test_a_removed_op_changes_the_supernet_output_and_fixed_rows_clear():
    space = _space()
    arch, _, measure = _linear_supernet(space)
    before = measure()
    arch.fixed_rows["normal"] = {0: torch.zeros(len(space.ops))}
    assert measure() < before
    arch.fixed_rows.clear()
    assert measure() == pytest.approx(before)


@pytest.mark.slow
def test_a_search_selects_by_perturbation_and_records_every_drop(tmp_path):
    overrides = TINY + ["search.decode.method=perturbation", "search.decode.tune_steps=1"]
    genotype, run_dir = search(SMOKE, overrides, out=str(tmp_path / "pt"))
    saved = Genotype.load(RunDir(run_dir).genotype)
    assert saved == genotype
    selection = json.loads(RunDir(run_dir).selection.read_text())
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2)
    for role in ROLES:
        rows = selection["op_drops"][role]
        assert len(rows) == sum(space.node_inputs())
        for row in rows:
            measured = [v for v, op in zip(row, selection["ops"]) if op != "none"]
            assert all(isinstance(v, float) for v in measured) and row[selection["ops"].index("none")] is None
    # theta is left as the search ended it: arch.json still decodes the theta way
    assert json.loads(RunDir(run_dir).arch.read_text())["ops"]["normal"]
    log = RunDir(run_dir).log.read_text()
    assert "perturbation selection (DARTS-PT)" in log and "keeps" in log
