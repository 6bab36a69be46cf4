"""Whole networks: every topology at several input sizes, search and discrete."""

from __future__ import annotations

import random

import pytest
import torch

from hpcnas.space.genotype import TOPOLOGIES
from hpcnas.space.networks import build_discrete_network, build_search_network
from hpcnas.space.searchspace import SearchSpace


def small_search(topology, depth=2, partial=1, mode="simplex"):
    space = SearchSpace.of(topology, nodes=2, towers=2, tower_depth=2, depth=depth)
    return build_search_network(space, 3, 2, channels=8, partial=partial, edge_norm=True, arch_mode=mode, seed=0)


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_search_network_logits_at_input_resolution(topology):
    net = small_search(topology, partial=2)
    s = SearchSpace.of(topology, depth=2).stride()
    for h, w in [(s, s), (2 * s, 3 * s), (4 * s, s)]:
        y = net(torch.randn(2, 3, h, w))
        assert y.shape == (2, 2, h, w)
    y.mean().backward()
    assert all(p.grad is not None for p in net.arch_parameters() if p.numel())


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_discrete_network_from_random_genotype(topology):
    g = SearchSpace.of(topology, nodes=2, towers=2, tower_depth=2, depth=2).sample(random.Random(1))
    net = build_discrete_network(g, 3, 2, channels=8, depth=2)
    s = SearchSpace.of(topology, depth=2).stride()
    for size in (s, 2 * s):
        assert net(torch.randn(2, 3, size, size)).shape == (2, 2, size, size)
    # the discrete net holds only the chosen ops: far fewer parameters than the supernet
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in small_search(topology).parameters())


def test_unetpp_discrete_keeps_only_path_nodes():
    g = SearchSpace.of("darts_unetpp", nodes=2, depth=2).sample(random.Random(0))
    net = build_discrete_network(g, 3, 2, channels=8, depth=2)
    on_paths = {n for p in g.paths for n in p} - {(0, 0)}
    assert set(net.order) == on_paths


def test_arch_parameter_shapes_and_modes():
    net = small_search("darts_unet", mode="simplex")
    ops = net.arch.ops["normal"]
    assert ops.shape == (2 + 3, 8)  # nodes 2: 2 + 3 edges, |O_base| = 8
    torch.testing.assert_close(ops.sum(-1), torch.ones(5))
    logits = small_search("darts_unet", mode="logits")
    torch.testing.assert_close(logits.arch.cell_arch("normal").ops.sum(-1), torch.ones(5))
    assert len(small_search("resnext_unet").arch.edges) == 0  # one input edge per node: no edge normalization
    assert len(small_search("darts_unetpp").arch.betas) == 3  # X(0,1), X(1,1), X(0,2)
