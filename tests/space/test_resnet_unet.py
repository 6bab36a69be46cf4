"""The ``resnet_unet`` space: the hand-designed ResNet-UNet with its blocks as choice points."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hpcnas.config import load_config
from hpcnas.errors import UserError
from hpcnas.search.decode import decode_genotype
from hpcnas.space.genotype import Genotype
from hpcnas.space.networks import build_discrete_network, build_search_network
from hpcnas.space.searchspace import SearchSpace
from hpcnas.space.topology import OP_SETS, OPS
from hpcnas.train.baselines import ResNetUNet
from tests.conftest import ROOT

HAND_DESIGNED_SKIP = {"topology": "resnet_unet", "cells": {"skip@0": [[["identity", 0]]]}}


def _space(searchable=None, depth: int = 2) -> SearchSpace:
    return SearchSpace.of("resnet_unet", depth=depth, per_stage=True, searchable=searchable)


def test_with_every_block_hand_designed_the_network_is_the_baseline():
    genotype = Genotype.from_dict(HAND_DESIGNED_SKIP)
    torch.manual_seed(3)
    baseline = ResNetUNet(3, 4, width=8, depth=2).eval()
    torch.manual_seed(3)
    chosen = build_discrete_network(genotype, 3, 4, channels=8, depth=2).eval()
    assert sum(p.numel() for p in chosen.parameters()) == sum(p.numel() for p in baseline.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(chosen(x), baseline(x), atol=1e-6)


def test_the_roles_are_the_searched_groups_at_every_level():
    assert _space().roles() == ("encoder@1", "encoder@2", "decoder@0", "decoder@1", "skip@0", "skip@1")
    assert _space(["skip", "decoder"]).roles() == ("decoder@0", "decoder@1", "skip@0", "skip@1")
    shared = SearchSpace.of("resnet_unet", depth=2, searchable=["encoder"])
    assert shared.roles() == ("encoder",)


def test_every_block_variant_keeps_the_shape_and_the_width_scales_its_inner_channels():
    ops = OP_SETS["O_blocks"]
    assert len(ops) == 27 and ops[0] == "identity"
    x = torch.randn(2, 8, 16, 16)
    for name in ops:
        assert OPS[name].module(8, 1, True)(x).shape == x.shape, name
    sizes = [sum(p.numel() for p in OPS[f"basic_3x3_w{w}"].module(8, 1, True).parameters()) for w in (0.5, 1, 1.5)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_only_the_searched_groups_carry_theta_and_get_its_gradient():
    space = _space(["decoder"])
    net = build_search_network(space, 3, 4, channels=8, partial=2)
    assert set(net.arch.ops) == {"decoder@0", "decoder@1"}
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    # the blocks not searched are the hand-designed ones: a single op with its own weights
    hand = [m for m in net.net.encoder]
    assert all(len(cell.edges[0]) == 1 and type(cell.edges[0][0]).__name__ == "Residual" for cell in hand)


def test_a_decoded_genotype_lists_only_the_searched_blocks_and_builds():
    space = _space(["encoder", "skip"])
    snapshot = {"ops": {}, "edges": None, "betas": {}}
    rng = np.random.default_rng(0)
    for role in space.roles():
        snapshot["ops"][role] = rng.dirichlet(np.ones(len(space.ops)), size=1)
    genotype = decode_genotype(space, snapshot, max_skips=0, max_parameter_free=0.0)
    assert [role for role, _ in genotype.cells] == list(space.roles())
    # the caps fight the DARTS collapse of cells; they do not forbid a hand-designed block's identity
    for role in space.roles():
        best = space.ops[int(np.argmax(snapshot["ops"][role][0]))]
        assert genotype.cell(role) == (((best, 0),),)
    assert genotype.cell("decoder@1") == ((("plain_3x3", 0),),)  # left out: hand-designed
    assert Genotype.from_dict(genotype.to_dict()) == genotype
    space.check(genotype, "g")
    out = build_discrete_network(genotype, 3, 4, channels=8, depth=2)(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 4, 32, 32)


def test_sampling_and_mutation_touch_only_the_searched_blocks():
    space = _space(["decoder"])
    rng = random.Random(1)
    for _ in range(20):
        genotype = space.sample(rng)
        assert [role for role, _ in genotype.cells] == ["decoder@0", "decoder@1"]
        mutant = space.mutate(rng, genotype)
        assert mutant != genotype and [role for role, _ in mutant.cells] == ["decoder@0", "decoder@1"]
        assert all(op != "none" for _, cell in genotype.cells for node in cell for op, _ in node)


def test_a_genotype_may_not_name_a_block_the_network_lacks():
    with pytest.raises(UserError, match="unknown cell for resnet_unet"):
        Genotype.from_dict({"topology": "resnet_unet", "cells": {"bridge@0": [[["identity", 0]]]}})
    with pytest.raises(UserError, match="unknown op 'basic_3x3_w2'"):
        Genotype.from_dict({"topology": "resnet_unet", "cells": {"skip@0": [[["basic_3x3_w2", 0]]]}})
    deep = Genotype.from_dict({"topology": "resnet_unet", "cells": {"encoder@3": [[["identity", 0]]]}})
    _space(depth=3).check(deep, "g")  # a shallower genotype than the network is fine: the rest is hand-designed
    with pytest.raises(UserError, match="has a cell for each of 3 levels, the config's space.depth is 2"):
        _space(depth=2).check(deep, "g")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["space.searchable=[encoder]"], "darts_unet searches every cell; space.searchable applies"),
        (["space.topology=resnet_unet", "space.searchable=[skips]"], "unknown block group 'skips'"),
        (["space.topology=resnet_unet", "space.searchable=[]"], "names no block group"),
        (["space.topology=resnet_unet", "space.searchable=auto:0"], "expected a list of block groups or auto:K"),
        (["space.topology=resnet_unet", "space.searchable=best"], "expected a list of block groups or auto:K"),
        (["space.topology=resnet_unet", "space.op_set=O_base"], "op set 'O_base' lacks resnet_unet's hand-designed"),
    ],
)
def test_space_searchable_is_checked_at_load(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(str(ROOT / "configs" / "smoke.yaml"), overrides)


def test_evolve_refuses_auto_k_it_has_no_warm_up_for():
    from hpcnas.execution.orchestrator import check_evolve_config

    sets = ["space.topology=resnet_unet", "space.searchable=auto:2"]
    cfg = load_config(str(ROOT / "configs" / "smoke-evolve.yaml"), sets)
    with pytest.raises(UserError, match="space.searchable=auto:2 picks blocks by a supernet's warm-up"):
        check_evolve_config(cfg, 2)
    check_evolve_config(load_config(str(ROOT / "configs" / "smoke-evolve.yaml"), sets[:1]), 2)


def test_overrides_may_change_both_keys_of_a_rule_in_turn():
    cfg = load_config(
        str(ROOT / "configs" / "darts_unet.yaml"), ["space.topology=resnet_unet", "space.op_set=O_blocks"]
    )
    assert (cfg.space.topology, cfg.space.op_set) == ("resnet_unet", "O_blocks")
    with pytest.raises(UserError, match="--set: key 'space.op_set': op set 'O_base' lacks"):
        load_config(str(ROOT / "configs" / "darts_unet.yaml"), ["space.topology=resnet_unet"])
