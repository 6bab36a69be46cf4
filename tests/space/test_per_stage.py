"""Per-stage cells (``space.cells: per_stage``): one role, theta and genotype cell per encoder and decoder level."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from hpcnas.errors import UserError
from hpcnas.search.decode import decode_genotype
from hpcnas.space.genotype import Genotype
from hpcnas.space.networks import build_discrete_network, build_search_network
from hpcnas.space.searchspace import SearchSpace

TOPOLOGIES = ["darts_unet", "darts_unetpp", "resnext_unet"]


def _space(topology: str, depth: int = 2) -> SearchSpace:
    return SearchSpace.of(topology, nodes=2, towers=2, tower_depth=2, depth=depth, per_stage=True)


def test_the_roles_are_one_per_encoder_and_decoder_level():
    assert _space("darts_unet", depth=3).roles() == (
        "reduce@1",
        "reduce@2",
        "reduce@3",
        "normal@0",
        "normal@1",
        "normal@2",
    )
    assert SearchSpace.of("darts_unet", depth=3).roles() == ("reduce", "normal")  # shared: the default


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_a_sampled_genotype_round_trips_mutates_and_builds_a_network_of_distinct_cells(topology):
    space = _space(topology)
    genotype = space.sample(random.Random(3))
    assert genotype.per_stage and genotype.depth() == 2 and [r for r, _ in genotype.cells] == list(space.roles())
    assert Genotype.from_dict(json.loads(genotype.to_json())) == genotype
    mutated = space.mutate(random.Random(0), genotype)
    assert sum(a != b for a, b in zip(genotype.cells, mutated.cells)) + (genotype.paths != mutated.paths) == 1
    net = build_discrete_network(genotype, 3, 4, channels=8, depth=2)
    roles = {m.role for m in net.modules() if getattr(m, "role", None) is not None}
    if topology == "darts_unetpp":  # the grid nodes on no kept path are not built
        assert len(roles) > 2 and roles <= set(space.roles())
    else:
        assert roles == set(space.roles())  # every level built from its own genotype cell
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 4, 32, 32)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_the_supernet_has_theta_per_role_and_decodes_to_a_per_stage_genotype(topology):
    space = _space(topology)
    net = build_search_network(space, 3, 4, channels=8, partial=2)
    assert net.arch.roles == list(space.roles()) and set(net.arch.ops) == set(space.roles())
    out = net(torch.randn(1, 3, 32, 32))
    out.mean().backward()  # every role's theta gets a gradient: each level's cells use their own
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch.ops.values())
    snapshot = net.arch.snapshot()
    genotype = decode_genotype(space, snapshot)
    assert genotype.per_stage and [r for r, _ in genotype.cells] == list(space.roles())
    space.check(genotype, "decoded")


def test_each_decoder_cell_is_capped_on_its_own():
    space = _space("darts_unet", depth=3)
    free = [k for k, op in enumerate(space.ops) if op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3")]
    edges = sum(space.node_inputs())
    ops = {}
    for role in space.roles():
        weights = np.full((edges, len(space.ops)), 0.01)
        weights[:, free] = 1.0  # every cell would be all parameter-free
        ops[role] = weights
    genotype = decode_genotype(space, {"ops": ops, "edges": None, "betas": {}}, max_parameter_free=0.5)
    for role, cell in genotype.cells:
        names = [op for node in cell for op, _ in node]
        share = sum(op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3") for op in names) / len(names)
        assert share <= 0.5 if role.startswith("normal") else share == 1.0
    assert genotype.parameter_free_fraction() == 0.5


def test_a_shared_genotype_still_loads_and_fits_any_depth():
    raw = {
        "topology": "darts_unet",
        "cells": {
            "reduce": [[["skip_connect", 0], ["sep_conv_3x3", 1]]],
            "normal": [[["max_pool_3x3", 0], ["dil_conv_3x3", 1]]],
        },
    }
    genotype = Genotype.from_dict(raw)
    assert not genotype.per_stage and genotype.depth() is None
    build_discrete_network(genotype, 3, 2, channels=8, depth=3)(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(normal=c["normal@0"]), "key 'cells.normal': unknown cell for darts_unet"),
        (lambda c: c.pop("reduce@2"), "key 'cells.reduce@2': missing cell"),
        (lambda c: c.update({"normal@7": c["normal@0"]}), "key 'cells.reduce@3': missing cell"),  # depth 8?
        (lambda c: c.update({"normal@x": c["normal@0"]}), "key 'cells.normal@x': unknown cell"),
    ],
)
def test_a_per_stage_genotype_names_every_level_once(edit, message):
    raw = _space("darts_unet").sample(random.Random(0)).to_dict()
    edit(raw["cells"])
    with pytest.raises(UserError, match=re.escape(message)):
        Genotype.from_dict(raw)


def test_a_per_stage_genotype_of_another_depth_is_refused_by_the_space():
    genotype = _space("darts_unet", depth=2).sample(random.Random(0))
    with pytest.raises(UserError, match="has a cell for each of 2 levels, the config's space.depth is 3"):
        SearchSpace.of("darts_unet", nodes=2, depth=3).check(genotype, "g.json")
