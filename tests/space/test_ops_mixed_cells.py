"""Ops, the mixed op (eq. 4, 7) and edge normalization (eq. 8), numerically."""

from __future__ import annotations

import pytest
import torch

from hpcnas.space.cells import CellArch, DartsCell
from hpcnas.space.genotype import OP_SETS
from hpcnas.space.mixed import MixedOp
from hpcnas.space.ops import build_op
from hpcnas.space.topology import OPS


@pytest.mark.parametrize("op_set", list(OP_SETS))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_and_strides(op_set, stride):
    x = torch.randn(2, 8, 16, 16)
    for name in OP_SETS[op_set]:
        if stride not in OPS[name].strides:  # a block of a hand-designed network, which downsamples itself
            with pytest.raises(ValueError, match="stride 1"):
                build_op(name, 8, stride, affine=True)
            continue
        y = build_op(name, 8, stride, affine=True)(x)
        assert y.shape == (2, 8, 16 // stride, 16 // stride), name
    for zero in ("none", "cut"):
        if zero in OP_SETS[op_set]:
            assert torch.count_nonzero(build_op(zero, 8, stride, True)(x)) == 0


def test_mixed_op_is_the_weighted_sum():
    torch.manual_seed(0)
    names = OP_SETS["O_base"]
    mixed = MixedOp(names, 6, 1).eval()
    x = torch.randn(2, 6, 8, 8)
    w = torch.softmax(torch.randn(len(names)), 0)
    expected = sum(w[k] * mixed.ops[k](x) for k in range(len(names)))
    torch.testing.assert_close(mixed(x, w), expected)
    # a one-hot weight selects exactly one op
    one_hot = torch.zeros(len(names))
    one_hot[names.index("skip_connect")] = 1.0
    torch.testing.assert_close(mixed(x, one_hot), x)


def test_partial_channels_k1_is_darts_and_k2_bypasses_half():
    torch.manual_seed(0)
    names = ("skip_connect", "none")
    x = torch.randn(1, 8, 4, 4)
    # K = 1: plain DARTS, every channel goes through the ops
    k1 = MixedOp(names, 8, 1, partial=1)
    torch.testing.assert_close(k1(x, torch.tensor([0.25, 0.75])), 0.25 * x)
    # K = 2: 4 sampled channels are mixed (0.25 * x), the 4 others bypass unchanged (eq. 7)
    gen = torch.Generator().manual_seed(3)
    k2 = MixedOp(names, 8, 1, partial=2, generator=gen, sampling="random")
    y = k2(x, torch.tensor([0.25, 0.75]))
    idx = torch.randperm(8, generator=torch.Generator().manual_seed(3))[:4]
    rest = torch.tensor([c for c in range(8) if c not in idx.tolist()])
    torch.testing.assert_close(y[:, idx], 0.25 * x[:, idx])
    torch.testing.assert_close(y[:, rest], x[:, rest])
    # a fresh sample every call, reproducible from the generator's state
    state = gen.get_state()
    a = k2(x, torch.tensor([0.25, 0.75]))
    gen.set_state(state)
    torch.testing.assert_close(k2(x, torch.tensor([0.25, 0.75])), a)


def test_partial_channels_strided_bypass_is_max_pooled():
    x = torch.randn(1, 4, 4, 4)
    m = MixedOp(("none",), 4, 2, partial=2, generator=torch.Generator().manual_seed(0), sampling="random")
    y = m(x, torch.tensor([1.0]))
    pooled = torch.nn.functional.max_pool2d(x, 2, 2)
    idx = torch.randperm(4, generator=torch.Generator().manual_seed(0))[:2]
    rest = [c for c in range(4) if c not in idx.tolist()]
    assert torch.count_nonzero(y[:, idx]) == 0
    torch.testing.assert_close(y[:, rest], pooled[:, rest])


def test_edge_normalization_weighs_each_input_edge():
    """One node reading both inputs through skip ops: out = g0 * s0 + g1 * s1 (eq. 8)."""
    names = ("skip_connect", "none")
    edges = [[(0, MixedOp(names, 4, 1)), (1, MixedOp(names, 4, 1))]]
    cell = DartsCell(edges, 4, 4, 4, reduce_prev=False, affine=False).eval()
    s0, s1 = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    ops = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gamma = [torch.tensor([0.3, 0.7])]
    out = cell([s0, s1], CellArch(ops, gamma))
    torch.testing.assert_close(out, 0.3 * cell.pre0(s0) + 0.7 * cell.pre1(s1))
    out_plain = cell([s0, s1], CellArch(ops, None))
    torch.testing.assert_close(out_plain, cell.pre0(s0) + cell.pre1(s1))


@pytest.mark.parametrize("size", [(32, 32), (33, 31), (7, 8)])
def test_factorized_reduce_equals_the_padded_shift_and_saves_no_copy_of_its_input(size):
    from hpcnas.space.ops import FactorizedReduce
    from hpcnas.train.memory import saved_bytes

    torch.manual_seed(0)
    reduce = FactorizedReduce(8, 16).train()
    x = torch.randn(2, 8, *size)
    relu = reduce.relu(x)
    shifted = torch.nn.functional.pad(relu[:, :, 1:, 1:], (0, 1, 0, 1))  # DARTS' form, robust to odd sides
    padded = reduce.bn(torch.cat([reduce.conv_1(relu), reduce.conv_2(shifted)], dim=1))
    assert torch.allclose(reduce(x), padded, atol=1e-6)
    # saved for backward: the ReLU's output once (both convolutions read it, one through a view), the conv outputs
    # for BatchNorm, and BatchNorm's statistics; a padded copy would add a second input-sized tensor
    input_bytes = x.numel() * x.element_size()
    assert saved_bytes(reduce, x) < 1.7 * input_bytes
