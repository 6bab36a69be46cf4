"""GAEA's update (eq. 10-11) and decoding (eq. 6, 9, 12, 13, Viterbi) on hand-set weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpcnas.search.decode import best_op, decode_cell, decode_genotype, path_log_likelihoods, select_paths, viterbi_path
from hpcnas.search.gaea import ExponentiatedGradient
from hpcnas.space.genotype import OP_SETS, unetpp_paths
from hpcnas.space.searchspace import SearchSpace

TWO_NODES = SearchSpace.of("darts_unet", nodes=2)


def test_one_gaea_step_by_hand():
    theta = torch.nn.Parameter(torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]]))
    theta.grad = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, -1.0]])
    ExponentiatedGradient([theta], lr=0.1).step()
    row0 = [0.5 * math.exp(-0.1), 0.3 * math.exp(0.2), 0.2]
    row1 = [0.25 * math.exp(-0.05), 0.25, 0.5 * math.exp(0.1)]
    expected = torch.tensor([[v / sum(row0) for v in row0], [v / sum(row1) for v in row1]])
    torch.testing.assert_close(theta.data, expected)
    torch.testing.assert_close(theta.data.sum(-1), torch.ones(2))


def test_gaea_sparsifies_toward_lower_gradient():
    theta = torch.nn.Parameter(torch.full((4,), 0.25))
    opt = ExponentiatedGradient([theta], lr=1.0)
    for _ in range(50):
        theta.grad = torch.tensor([0.0, 1.0, 1.0, 1.0])
        opt.step()
    assert theta.data[0] > 0.99


OPS = OP_SETS["O_base"]  # sep3 sep5 dil3 dil5 avg max skip none


def test_best_op_excludes_zero_and_breaks_ties_by_order():
    w = np.array([0.1, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.5])  # none is the largest
    assert best_op(w, OPS) == (1, 0.2)  # sep_conv_5x5 ties dil_conv_3x3: the earlier wins
    large = OP_SETS["O_large"]
    w = np.zeros(len(large))
    w[large.index("cut")] = 0.9
    w[large.index("skip")] = 0.05
    assert large[best_op(w, large)[0]] == "skip"


def test_darts_node_keeps_two_strongest_edges():
    # node 0 reads inputs 0, 1; node 1 reads inputs 0, 1, 2
    op_w = np.full((5, len(OPS)), 0.1)
    op_w[0, 0] = 0.3  # in 0 -> node 0: sep3 0.3
    op_w[1, 6] = 0.4  # in 1 -> node 0: skip 0.4
    op_w[2, 2] = 0.9  # in 0 -> node 1: dil3 0.9
    op_w[3, 7] = 0.95  # in 1 -> node 1: none only (best non-zero op ties at 0.1 -> sep3)
    op_w[4, 3] = 0.5  # node 0 -> node 1: dil5 0.5
    cell = decode_cell(TWO_NODES, op_w)
    assert cell == ((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_3x3", 0), ("dil_conv_5x5", 2)))


def test_edge_normalization_changes_the_choice():
    op_w = np.full((5, len(OPS)), 0.1)  # node 0: rows 0-1, node 1 (three inputs): rows 2-4
    op_w[2, 0], op_w[3, 1], op_w[4, 2] = 0.5, 0.4, 0.3
    plain = decode_cell(TWO_NODES, op_w)
    assert plain[1] == (("sep_conv_3x3", 0), ("sep_conv_5x5", 1))
    gamma = [np.array([0.5, 0.5]), np.array([0.1, 0.3, 0.6])]  # node 1's alpha * gamma: 0.05, 0.12, 0.18
    normed = decode_cell(TWO_NODES, op_w, edge_weights=gamma)
    assert normed[1] == (("sep_conv_5x5", 1), ("dil_conv_3x3", 2))


def test_edge_ties_go_to_lower_input():
    op_w = np.full((5, len(OPS)), 0.125)
    cell = decode_cell(TWO_NODES, op_w)
    assert cell[1] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))


def test_resnext_cell_uses_tower_sources():
    large = OP_SETS["O_large"]
    op_w = np.full((4, len(large)), 0.05)
    for e, k in enumerate([1, 4, 7, 9]):
        op_w[e, k] = 0.6
    space = SearchSpace.of("resnext_unet", towers=2, tower_depth=2)
    assert [space.sources(j) for j in range(4)] == [[0], [1], [0], [3]]
    cell = decode_cell(space, op_w)
    assert cell == ((("conv2d_2", 0),), (("depthconv2d_2", 1),), (("splitconv2d_2", 0),), (("skip", 3),))


def hand_betas(prefer_skip: float):
    """Depth 2 betas: X(0,1) <- [up X(1,0), skip X(0,0)]; X(1,1) <- [up X(2,0), skip X(1,0)];
    X(0,2) <- [up X(1,1), X(0,0), X(0,1)]."""
    return {
        (0, 1): np.array([1 - prefer_skip, prefer_skip]),
        (1, 1): np.array([0.3, 0.7]),
        (0, 2): np.array([0.6, 0.1, 0.3]),
    }


def test_path_scores_are_average_log_likelihoods():
    paths = unetpp_paths(2)
    scores = path_log_likelihoods(hand_betas(0.8), paths)
    by_path = dict(zip(paths, scores))
    direct = ((0, 0), (0, 2))
    assert by_path[direct] == pytest.approx(math.log(0.1))
    down_up = ((0, 0), (1, 0), (1, 1), (0, 2))  # down edge counts log 1
    assert by_path[down_up] == pytest.approx((0 + math.log(0.7) + math.log(0.6)) / 3)
    skip_skip = ((0, 0), (0, 1), (0, 2))
    assert by_path[skip_skip] == pytest.approx((math.log(0.8) + math.log(0.3)) / 2)


def test_mu_plus_three_sigma_and_fixed_k():
    scores = np.array([-2.0] * 20 + [-0.1])
    assert select_paths(scores, "auto") == [20]  # the outlier alone clears mu + 3 sigma
    scores = np.array([-1.0, -1.1, -0.9, -1.05])
    assert select_paths(scores, "auto") == [2]  # none clears it: keep the best
    assert select_paths(scores, 2) == [0, 2]
    assert select_paths(np.array([-1.0, -1.0, -2.0]), 1) == [0]  # tie: the earlier path


def test_viterbi_single_best_path():
    # the best summed log-probability: X(0,0) -> X(1,0) -> X(1,1) -> X(0,2) = log .7 + log .6
    assert viterbi_path(hand_betas(0.8), 2) == ((0, 0), (1, 0), (1, 1), (0, 2))
    betas = hand_betas(0.8)
    betas[(0, 2)] = np.array([0.05, 0.9, 0.05])
    assert viterbi_path(betas, 2) == ((0, 0), (0, 2))


def test_decode_genotype_unetpp_end_to_end():
    op_w = np.full((5, len(OPS)), 0.1)
    snap = {"ops": {"reduce": op_w, "normal": op_w}, "edges": None, "betas": hand_betas(0.8)}
    space = SearchSpace.of("darts_unetpp", nodes=2, depth=2)
    g = decode_genotype(space, snap, paths="auto")
    assert g.paths and all(p[-1] == (0, 2) for p in g.paths)
    v = decode_genotype(space, snap, path_decoder="viterbi")
    assert viterbi_path(
        {(0, 1): np.array([0.5, 0.5]), (1, 1): np.array([0.5, 0.5]), (0, 2): np.array([1.0, 0.0, 0.0])}, 2
    )[1:3] == ((1, 0), (2, 0))  # tie: earliest source
    assert v.paths == (((0, 0), (1, 0), (1, 1), (0, 2)),)
