"""The peak-memory estimate before dispatch: its saved-activation part against a real measurement."""

from __future__ import annotations

import random

import pytest
import torch

from hpcnas.config import load_config
from hpcnas.space.networks import build_discrete_network
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.memory import MemoryEstimate, estimate_training_memory, saved_bytes


@pytest.mark.parametrize("topology", ["darts_unet", "darts_unetpp", "resnext_unet"])
def test_saved_bytes_scale_from_one_tiny_trace_to_the_real_batch_and_tile(topology):
    space = SearchSpace.from_config(load_config(None, [f"space.topology={topology}", "space.depth=2"]))
    rng = random.Random(7)
    for _ in range(3):
        torch.manual_seed(0)
        model = build_discrete_network(space.sample(rng), 3, 2, channels=8, depth=2)
        tile = 4 * space.stride()
        estimate = estimate_training_memory(model, 3, tile, space.stride())
        measured = saved_bytes(model, torch.randn(3, 3, tile, tile))
        assert estimate.saved(3) == pytest.approx(measured, rel=0.1)
        assert estimate.total(3) > estimate.saved(3) + 3 * estimate.parameters - 1


def test_the_largest_batch_that_fits():
    e = MemoryEstimate(parameters=100, saved_fixed=50, saved_per_sample=30, working_per_sample=10)
    assert e.total(0) == 350 and e.total(4) == 350 + 160
    assert e.largest_batch(limit=350 + 160, most=8) == 4
    assert e.largest_batch(limit=350 + 159, most=8) == 3
    assert e.largest_batch(limit=10_000, most=8) == 8
    assert e.largest_batch(limit=389, most=8) == 0  # not even one sample


def test_the_estimate_leaves_the_supernet_exactly_as_it_was():
    """A run logs the estimate after a resume restored it: the trace must not move batch-norm statistics, the
    global random stream or the supernet's own channel generator (an exact resume was off by one step)."""
    from hpcnas.space.networks import build_search_network

    space = SearchSpace.from_config(load_config(None, ["space.depth=2"]))
    model = build_search_network(space, 3, 2, channels=8, partial=2, sampling="random", seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng, channels = torch.get_rng_state(), model.channel_rng.get_state()
    estimate_training_memory(model, 3, 4 * space.stride(), space.stride())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(model.channel_rng.get_state(), channels)
    assert model.training
