"""Collapse remedies and the numerical fixes: GAEA's shift and floor, per-optimizer defaults,
partial-channel schemes, DARTS-'s auxiliary skip, P-DARTS's cap, DARTS+'s early stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hpcnas.config import load_config
from hpcnas.errors import UserError
from hpcnas.pipeline import search
from hpcnas.plugins import ARCH_OPTIMIZERS
from hpcnas.rundir import read_jsonl
from hpcnas.search.decode import decode_cell, decode_configured, snapshot_from_json
from hpcnas.search.gaea import SIMPLEX_FLOOR, ExponentiatedGradient
from hpcnas.space.genotype import OP_SETS, Genotype
from hpcnas.space.mixed import MixedOp, channel_shuffle
from hpcnas.space.searchspace import SearchSpace
from tests.conftest import ROOT

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = [
    "data.synth.n=16",
    "data.synth.size=32",
    "space.channels=8",
    "space.depth=2",
    "space.nodes=2",
    "search.epochs=3",
    "search.batch_size=4",
    "search.arch_start_epoch=2",
    "search.partial_channels=2",
    "search.arch_lr=3.0",
    "device=cpu",
]
OPS = OP_SETS["O_base"]  # sep3 sep5 dil3 dil5 avg max skip none


def test_gaea_survives_a_gradient_that_underflows_every_entry():
    theta = torch.nn.Parameter(torch.full((2, 4), 0.25))
    theta.grad = torch.full((2, 4), 2000.0)  # exp(-200) underflows: without the shift, 0 / 0
    theta.grad[1, 2] = 1990.0
    ExponentiatedGradient([theta], lr=0.1).step()
    assert torch.isfinite(theta).all()
    torch.testing.assert_close(theta.data[0], torch.full((4,), 0.25))  # a constant changes nothing
    assert theta.data[1].argmax() == 2


def test_gaea_floor_lets_a_losing_op_come_back():
    theta = torch.nn.Parameter(torch.full((4,), 0.25))
    opt = ExponentiatedGradient([theta], lr=1.0)
    for _ in range(100):
        theta.grad = torch.tensor([0.0, 50.0, 50.0, 50.0])
        opt.step()
    assert theta.data[1:].min() >= SIMPLEX_FLOOR * 0.99  # floored, not 0
    for _ in range(30):
        theta.grad = torch.tensor([50.0, 0.0, 50.0, 50.0])
        opt.step()
    assert theta.data.argmax() == 1


def test_each_architecture_optimizer_has_its_reference_defaults():
    p = [torch.nn.Parameter(torch.zeros(3))]
    adam = ARCH_OPTIMIZERS["adam"].make(p, None, 1e-3)
    assert isinstance(adam, torch.optim.Adam)
    group = adam.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (6e-4, (0.5, 0.999), 1e-3)
    gaea = ARCH_OPTIMIZERS["gaea"].make(p, None, 1e-3, steps=48).param_groups[0]  # its default: a movement of 12
    assert gaea["lr"] == pytest.approx(12 / 48) and gaea["normalize"]
    assert ARCH_OPTIMIZERS["gaea"].make(p, 2.0, 1e-3).param_groups[0]["lr"] == 2.0
    with pytest.raises(UserError, match="known: gaea, adam"):
        ARCH_OPTIMIZERS["adamw"].make(p, None, 0.0)


def _theta_after(steps: int, scale: float, movement: float = 2.0) -> torch.Tensor:
    theta = torch.nn.Parameter(torch.full((2, 3), 1 / 3))
    opt = ARCH_OPTIMIZERS["gaea"].make([theta], None, 0.0, movement=movement, steps=steps)
    for _ in range(steps):
        theta.grad = scale * torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
        opt.step()
    return theta.detach()


def test_a_scaled_step_moves_theta_as_far_at_any_budget_and_gradient_scale():
    reference = _theta_after(20, 1.0)
    for steps, scale in [(20, 1e-4), (20, 100.0), (400, 1.0), (400, 1e-3)]:
        torch.testing.assert_close(_theta_after(steps, scale), reference)
    log_odds = torch.log(reference[0, 0] / reference[0, 2]).item()
    # the tensor's rows [-1, 0, 1] and [0, 0, 0] have a mean squared spread of (2/3 + 0) / 2: the best op of the
    # first gains 2 / sqrt(1/3) x movement in log-odds over the worst
    assert log_odds == pytest.approx(2 / (1 / 3) ** 0.5 * 2.0, rel=1e-4)
    torch.testing.assert_close(reference[1], torch.full((3,), 1 / 3))  # an edge with no signal stays put
    # the old fixed step, by contrast, moves with the number of steps and the gradient's scale
    fixed = torch.nn.Parameter(torch.full((3,), 1 / 3))
    opt = ARCH_OPTIMIZERS["gaea"].make([fixed], 0.1, 0.0)
    for _ in range(20):
        fixed.grad = torch.tensor([-1e-3, 0.0, 1e-3])
        opt.step()
    assert torch.log(fixed[0] / fixed[2]).item() < 0.01


def test_a_scaled_step_is_movement_over_steps():
    p = [torch.nn.Parameter(torch.full((3,), 1 / 3))]
    gaea = ARCH_OPTIMIZERS["gaea"].make(p, None, 0.0, movement=3.0, steps=60)
    assert gaea.param_groups[0]["lr"] == pytest.approx(0.05) and gaea.param_groups[0]["normalize"]
    assert ARCH_OPTIMIZERS["adam"].make(p, None, 0.0, movement=3.0, steps=60).param_groups[0]["lr"] == pytest.approx(
        0.05
    )
    assert not ARCH_OPTIMIZERS["gaea"].make(p, 0.1, 0.0).param_groups[0]["normalize"]  # an lr is a fixed step


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_shuffle_sampling_is_the_reference_slice_and_deterministic():
    torch.manual_seed(0)
    op = MixedOp(OPS, 8, 1, partial=4, sampling="shuffle")
    w = torch.softmax(torch.randn(len(OPS)), 0)
    x = torch.randn(2, 8, 6, 6)
    op.eval()
    out = op(x, w)
    mixed = sum(wk * o(x[:, :2]) for wk, o in zip(w, op.ops))
    expected = channel_shuffle(torch.cat([mixed, x[:, 2:]], 1), 4)
    torch.testing.assert_close(out, expected)
    op.train()
    torch.testing.assert_close(op(x, w), op(x, w))  # no randomness in training either


def test_random_sampling_is_deterministic_in_evaluation():
    gen = torch.Generator().manual_seed(0)
    op = MixedOp(OPS, 8, 2, partial=2, generator=gen, sampling="random")
    w = torch.full((len(OPS),), 1 / len(OPS))
    x = torch.randn(2, 8, 8, 8)
    op.train()
    assert not torch.equal(op(x, w), op(x, w))  # a fresh subset each training call
    op.eval()
    torch.testing.assert_close(op(x, w), op(x, w))


def test_aux_skip_adds_the_input_on_stride_one_edges_only():
    w = torch.zeros(len(OPS))  # every op weighted 0: what is left is the auxiliary skip
    x = torch.randn(2, 4, 8, 8)
    normal, reduction = MixedOp(OPS, 4, 1), MixedOp(OPS, 4, 2)
    normal.aux_skip = reduction.aux_skip = 0.5
    torch.testing.assert_close(normal(x, w), 0.5 * x)
    torch.testing.assert_close(reduction(x, w), torch.zeros(2, 4, 4, 4))


def test_pdarts_cap_replaces_the_weakest_skips():
    # three nodes, each reading 2 + j inputs; skip wins every edge, sep_conv_3x3 is the runner-up
    op_w = np.full((9, len(OPS)), 0.05)
    op_w[:, OPS.index("skip_connect")] = np.linspace(0.5, 0.9, 9)
    op_w[:, 0] = 0.2
    plain = decode_cell(SearchSpace.of("darts_unet", nodes=3), op_w)
    assert sum(op == "skip_connect" for node in plain for op, _ in node) == 6
    capped = decode_cell(SearchSpace.of("darts_unet", nodes=3), op_w, max_skips=2)
    ops = [op for node in capped for op, _ in node]
    assert ops.count("skip_connect") == 2 and ops.count("sep_conv_3x3") == 4
    assert capped[2] == (("skip_connect", 2), ("skip_connect", 3))  # the strongest skips stay
    none_left = decode_cell(SearchSpace.of("darts_unet", nodes=3), op_w, max_skips=0)
    assert [op for node in none_left for op, _ in node] == ["sep_conv_3x3"] * 6


@pytest.mark.slow
def test_aux_skip_decays_and_arch_json_redecodes(tmp_path):
    genotype, run = search(SMOKE, TINY + ["search.aux_skip=1.0"], out=str(tmp_path / "run"))
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["aux_skip"] for r in records] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert records[0]["entropy_normalized"]["mean"] == pytest.approx(1.0)  # before arch_start_epoch=2
    assert records[-1]["entropy_normalized"]["mean"] < 1.0
    assert all(0 <= r["parameter_free"] <= 1 for r in records)
    cfg = load_config(str(run / "config.yaml"))
    snapshot = snapshot_from_json(json.loads((run / "arch.json").read_text()))
    assert decode_configured(cfg, snapshot) == genotype
    capped = decode_configured(load_config(str(run / "config.yaml"), ["search.decode.max_skips=0"]), snapshot)
    assert capped.skip_count() == 0


@pytest.mark.slow
def test_dartsplus_stops_and_keeps_the_genotype_before(tmp_path, monkeypatch):
    from hpcnas.search.continuous import SupernetSearch

    # the real rule on a hand-made record; then the loop's reaction to it
    runner_cfg = TINY + ["search.early_stop_skips=1", "search.epochs=4"]
    seen = []
    original = SupernetSearch.stop_early

    def collapse_in_epoch_3(self, epoch, record):
        if epoch == 2:  # pretend the third epoch's decoder cell turned into skips
            record["genotype"]["cells"]["normal"] = [[["skip_connect", 0], ["skip_connect", 1]]] * 2
        seen.append(epoch)
        return original(self, epoch, record)

    monkeypatch.setattr(SupernetSearch, "stop_early", collapse_in_epoch_3)
    genotype, run = search(SMOKE, runner_cfg, out=str(tmp_path / "run"))
    records = read_jsonl(run / "metrics.jsonl")
    assert seen == [0, 1, 2] and [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["stopped_early"] is True
    assert genotype == Genotype.from_dict(records[1]["genotype"])  # the epoch before the collapse
    assert Genotype.load(str(run / "genotype.json")) == genotype
    monkeypatch.undo()
    again, _ = search(None, [], resume=str(run))  # a finished early stop stays finished
    assert again == genotype and len(read_jsonl(run / "metrics.jsonl")) == 3


def test_parameter_free_cap_keeps_at_most_that_share():
    op_w = np.full((5, len(OPS)), 0.05)  # nodes reading 2 and 3 inputs: 4 kept edges
    op_w[:, OPS.index("max_pool_3x3")] = 0.6
    op_w[:, OPS.index("skip_connect")] = 0.5
    op_w[:, OPS.index("dil_conv_3x3")] = 0.3
    capped = decode_cell(SearchSpace.of("darts_unet", nodes=2), op_w, max_parameter_free=0.5)
    ops = [op for node in capped for op, _ in node]
    assert sum(op in ("max_pool_3x3", "skip_connect", "avg_pool_3x3") for op in ops) == 2
    assert ops.count("dil_conv_3x3") == 2  # the masked edges fall back to their best op with weights


def test_the_reduction_cell_has_its_own_parameter_free_cap():
    """Searches on overhead imagery decoded reduction cells to 67-100 % pooling: the decoder's cap left them alone."""
    space = SearchSpace.of("darts_unet", nodes=2)
    op_w = np.full((5, len(OPS)), 0.05)
    op_w[:, OPS.index("max_pool_3x3")] = 0.6
    op_w[:, OPS.index("sep_conv_3x3")] = 0.3
    snapshot = {"ops": {role: op_w for role in space.topology.cell_names}, "edges": None}
    cfg = load_config(str(ROOT / "configs" / "smoke.yaml"), ["space.nodes=2"])
    free = lambda g: {role: sum(op == "max_pool_3x3" for node in cell for op, _ in node) for role, cell in g.cells}  # noqa: E731
    assert free(decode_configured(cfg, snapshot)) == {"reduce": 4, "normal": 2}  # the default caps the decoder only
    both = load_config(
        str(ROOT / "configs" / "smoke.yaml"), ["space.nodes=2", "search.decode.max_parameter_free_reduction=0.5"]
    )
    assert free(decode_configured(both, snapshot)) == {"reduce": 2, "normal": 2}
