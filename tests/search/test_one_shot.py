"""One-shot estimates: a genotype scored inside the trained supernet of a search, its weights inherited."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hpcnas.errors import UserError
from hpcnas.pipeline import search
from hpcnas.search.decode import decode_genotype
from hpcnas.search.one_shot import TrainedSupernet, genotype_rows
from hpcnas.space.searchspace import SearchSpace
from tests.search.test_collapse import SMOKE, TINY


def rows_as_snapshot(rows) -> dict:
    ops = {role: torch.stack([edges[e] for e in range(len(edges))]).numpy() for role, edges in rows.items()}
    return {"ops": ops, "edges": None, "betas": {}}


@pytest.mark.parametrize("per_stage", [False, True])
def test_the_rows_of_a_decoded_genotype_decode_to_it_again(per_stage):
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=3, per_stage=per_stage)
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = {role: rng.random((sum(space.node_inputs()), len(space.ops))) for role in space.roles()}
        genotype = decode_genotype(space, {"ops": theta, "edges": None, "betas": {}})
        rows = genotype_rows(space, genotype, space.roles())
        assert decode_genotype(space, rows_as_snapshot(rows)) == genotype
        for role, edges in rows.items():  # each kept edge carries its one op, every other edge nothing
            kept = sum(len(node) for node in genotype.cell(role))
            assert sum(float(row.sum()) for row in edges.values()) == kept


def test_an_input_a_random_cell_draws_twice_carries_both_of_its_ops():
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=3)
    twice = next(
        g
        for g in (space.sample(random.Random(seed)) for seed in range(200))
        if any(len({source for _, source in node}) < len(node) for _, cell in g.cells for node in cell)
    )
    rows = genotype_rows(space, twice, space.roles())
    for role, cell in twice.cells:
        first = 0
        for j, node in enumerate(cell):
            sources = space.sources(j)
            for op, source in node:
                assert rows[role][first + sources.index(source)][space.ops.index(op)] >= 1.0
            assert sum(float(rows[role][first + k].sum()) for k in range(len(sources))) == len(node)
            first += len(sources)


@pytest.mark.slow
def test_one_shot_and_perturbation_scores_tell_genotypes_apart_and_leave_the_search_as_it_was(tmp_path):
    genotype, run_dir = search(SMOKE, TINY, out=str(tmp_path / "search"))
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2)
    others = [space.sample(random.Random(seed)) for seed in range(4)]
    checkpoint = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    supernet = TrainedSupernet(run_dir)
    scores = supernet.one_shot([genotype, *others])
    assert all(0.0 <= s.miou <= 1.0 and s.loss > 0 for s in scores)
    assert len({s.loss for s in scores}) == len(scores), scores  # each genotype's own ops, not the whole supernet
    assert supernet.one_shot([others[2]]) == [scores[3]]  # nothing of one genotype stays for the next
    assert not supernet.model.arch.fixed_rows

    validations = []
    validate = supernet.validate
    supernet.validate = lambda: validations.append(1) or validate()  # type: ignore[method-assign]
    perturbation = supernet.perturbation([genotype, *others])
    held = {(role, edge, op) for g in [genotype, *others] for role, edge, op, _ in supernet._chosen_ops(g)}
    assert len(validations) == 1 + len(held)  # the whole supernet once, then each op a genotype holds, once
    supernet.validate = validate  # type: ignore[method-assign]
    assert len(set(perturbation)) == len(perturbation), perturbation
    assert not any(supernet.model.arch.fixed_rows.values())  # every removal put back
    whole = supernet.validate().loss
    by_hand = 0.0  # each op of the genotype removed alone from the whole supernet, its loss rise summed
    for role, edges in genotype_rows(space, others[1], supernet.model.arch.roles).items():
        for edge, row in edges.items():
            for k in torch.nonzero(row).flatten().tolist():
                without = supernet.model.arch.op_weights(role).detach()[edge].clone()
                without[k] = 0.0
                supernet.model.arch.fixed_rows = {role: {edge: without}}
                by_hand += float(row[k]) * (supernet.validate().loss - whole)
    supernet.model.arch.fixed_rows = {}
    assert by_hand == pytest.approx(perturbation[2], rel=1e-6, abs=1e-9)
    assert supernet.perturbation([others[1]]) == [perturbation[2]]  # measured once, reused

    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == checkpoint
    wrong = SearchSpace.of("resnet_unet", "O_blocks", depth=2).sample(random.Random(0))
    for score in (supernet.one_shot, supernet.perturbation):
        with pytest.raises(UserError, match="genotype is resnet_unet but the config's space.topology is darts_unet"):
            score([wrong])
