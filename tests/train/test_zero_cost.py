"""Zero-cost scores at initialization, as the pre-screen and the children compute them."""

from __future__ import annotations

import math
import random

import pytest

from hpcnas.config import load_config
from hpcnas.plugins import ZERO_COST_SCORES
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.zero_cost import GenotypeScorer, training_batch, zero_cost_scores


@pytest.mark.slow
def test_every_score_is_finite_repeatable_and_tells_architectures_apart(synth_h5):
    cfg = load_config(None, ["space.channels=4", "space.depth=2", "space.nodes=2"])
    space = SearchSpace.from_config(cfg)
    rng = random.Random(0)
    first, second = space.sample(rng), space.sample(rng)
    scorer = GenotypeScorer(cfg, str(synth_h5), ["naswot"], batch=6)
    a, b = scorer(first), scorer(second)
    assert math.isfinite(a) and math.isfinite(b) and a != b
    assert scorer(first) == a  # a fixed seed: the same network, the same batch, the same score

    from hpcnas.data.hdf5 import read_info
    from hpcnas.train.spec import model_spec

    spec = model_spec(cfg, read_info(str(synth_h5)), first, measure=False)
    x, y = training_batch(str(synth_h5), 6)
    assert x.shape[0] == 6 and y.shape == (6, x.shape[2], x.shape[3])
    scores = zero_cost_scores(spec.build, x, y)
    assert set(scores) == set(ZERO_COST_SCORES) and all(math.isfinite(v) for v in scores.values())
    assert GenotypeScorer(cfg, str(synth_h5), None, batch=6).scores(spec) == scores  # what a worker records
    assert scores["naswot"] == a and scores["params"] == sum(p.numel() for p in spec.build().parameters())
    assert scores["grad_norm"] > 0 and scores["synflow"] > 0
