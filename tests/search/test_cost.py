"""FBNet's resource term: the expected cost of the mixed ops under theta, and what it does to a search."""

from __future__ import annotations

import pytest
import torch

from hpcnas.errors import UserError
from hpcnas.rundir import read_jsonl
from hpcnas.search.cost import ExpectedCost
from hpcnas.space.networks import build_search_network
from hpcnas.space.searchspace import SearchSpace
from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def supernet(mode="simplex"):
    space = SearchSpace.of("darts_unet", nodes=2, depth=2)
    return build_search_network(space, 3, 2, channels=8, partial=2, arch_mode=mode)


def test_uniform_theta_costs_one_and_parameter_free_ops_cost_nothing():
    net = supernet()
    cost = ExpectedCost(net, "params", torch.zeros(1, 3, 16, 16))
    assert float(cost().detach()) == pytest.approx(1.0)
    ops = [m for m in net.modules() if hasattr(m, "op_names")][0].op_names
    with torch.no_grad():
        for p in net.arch.ops.values():
            p.zero_()
            p[:, ops.index("skip_connect")] = 1.0  # every edge a skip: weights only where a skip must reduce
    assert (cost.tables["normal"][:, ops.index("skip_connect")] == 0).all()  # stride 1: an identity
    assert (cost.tables["reduce"][:, ops.index("skip_connect")] > 0).any()  # stride 2: a factorized reduction
    assert 0 < float(cost().detach()) < 0.6
    with torch.no_grad():
        for p in net.arch.ops.values():
            p.zero_()
            p[:, ops.index("sep_conv_5x5")] = 1.0  # the heaviest op everywhere
    assert float(cost().detach()) > 2.0


def test_its_gradient_pushes_theta_from_convolutions_toward_free_ops():
    net = supernet(mode="logits")
    cost = ExpectedCost(net, "params", torch.zeros(1, 3, 16, 16))
    cost().backward()
    ops = [m for m in net.modules() if hasattr(m, "op_names")][0].op_names
    grad = net.arch.ops["normal"].grad
    assert (grad[:, ops.index("sep_conv_5x5")] > 0).all() and (grad[:, ops.index("skip_connect")] < 0).all()


def test_latency_table_is_timed_and_an_unknown_kind_is_refused():
    net = supernet()
    cost = ExpectedCost(net, "latency", torch.zeros(1, 3, 16, 16))
    assert all((t > 0).any() for t in cost.tables.values()) and float(cost().detach()) == pytest.approx(1.0)
    with pytest.raises(UserError, match="unknown cost 'energy'"):
        ExpectedCost(net, "energy", torch.zeros(1, 3, 16, 16))


@pytest.mark.slow
def test_the_cost_term_lowers_the_expected_params_of_the_smoke_search(tmp_path):
    """Same seed, same data: only the weight of the term differs (a negligible one still logs the cost)."""
    final = {}
    for weight in (1e-9, 2.0):
        out = tmp_path / f"w{weight}"
        sets = [
            "search.epochs=2",
            "search.arch_start_epoch=1",
            "search.cost.kind=params",
            f"search.cost.weight={weight}",
        ]
        proc = run_cli("search", "--config", SMOKE, "--out", str(out), "--device", "cpu", *set_args(sets))
        assert proc.returncode == 0, proc.stderr[-2000:]
        final[weight] = read_jsonl(out / "metrics.jsonl")[-1]["expected_cost"]
    assert final[2.0] < final[1e-9] - 0.05, final
