"""The model spec crosses files as plain data, and reads back as the network it described, old files included."""

from __future__ import annotations

import random

import pytest
import torch

from hpcnas.config import load_config
from hpcnas.errors import UserError
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.spec import BASELINE, GENOTYPE, ModelSpec

CFG = load_config(None, ["space.channels=4", "space.depth=2", "space.nodes=2"])


def a_genotype_spec() -> ModelSpec:
    genotype = SearchSpace.from_config(CFG).sample(random.Random(1))
    return ModelSpec(kind=GENOTYPE, genotype=genotype, in_channels=3, num_classes=2, depth=2, channels=4)


def test_a_spec_reads_back_as_the_same_network():
    spec = a_genotype_spec().measured(32)
    raw = spec.to_dict()
    assert raw["genotype"]["topology"] == spec.genotype.topology and raw["params"] == spec.params > 0
    again = ModelSpec.from_dict(raw, "model.json")
    assert again == spec and again.name == spec.genotype.topology and again.width == 4
    torch.manual_seed(0)
    weights = spec.build().state_dict()
    torch.manual_seed(0)
    rebuilt = again.build().state_dict()
    assert weights.keys() == rebuilt.keys() and all(torch.equal(weights[k], rebuilt[k]) for k in weights)


def test_an_unmeasured_spec_writes_no_sizes_and_a_new_width_forgets_them():
    spec = a_genotype_spec()
    assert "params" not in spec.to_dict() and "flops" not in spec.to_dict()
    wider = spec.measured(32).with_width(8)
    assert (wider.channels, wider.params, wider.flops) == (8, None, None)
    assert wider.measured(32).params > spec.measured(32).params


def test_a_spec_written_before_the_data_and_size_keys_still_loads():
    old = {"kind": BASELINE, "genotype": None, "in_channels": 3, "num_classes": 2, "channels": 8, "depth": 2,
           "baseline_width": 8, "baseline_blocks": 1, "written_by": "a newer hpcnas"}  # fmt: skip
    spec = ModelSpec.from_dict(old, "best.pt")
    assert (spec.name, spec.width, spec.data, spec.class_names, spec.params) == (BASELINE, 8, {}, [], None)
    assert spec.build()(torch.zeros(1, 3, 16, 16)).shape == (1, 2, 16, 16)


@pytest.mark.parametrize(
    "raw, message",
    [
        (["not", "a", "dict"], "not a model spec"),
        ({"kind": "lambda: os.system('x')"}, "not a model spec"),
        ({"kind": BASELINE, "num_classes": 2}, "incomplete model spec"),
        ({"kind": GENOTYPE, "in_channels": 3, "num_classes": 2, "depth": 2, "genotype": {"topology": 7}}, "topology"),
    ],
)
def test_a_malformed_spec_is_a_user_error_naming_its_file(raw, message):
    with pytest.raises(UserError, match=message) as bad:
        ModelSpec.from_dict(raw, "runs/x/checkpoints/best.pt")
    assert bad.value.source == "runs/x/checkpoints/best.pt"
