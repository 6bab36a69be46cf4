"""What a fair comparison needs: sizes recorded everywhere, retraining at a chosen width, test evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from hpcnas.pipeline import search, train
from hpcnas.rundir import read_jsonl
from hpcnas.train.baselines import ResNetUNet
from hpcnas.train.complexity import complexity, count_parameters, width_for_parameters
from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = [
    "data.synth.n=16",
    "data.synth.size=32",
    "space.channels=8",
    "space.depth=2",
    "space.nodes=2",
    "train.epochs=2",
    "train.select_from_epoch=1",
    "train.batch_size=4",
    "device=cpu",
    "train.baseline_width=8",
    "search.epochs=1",
    "search.arch_start_epoch=1",
]


def test_flops_count_a_convolution_by_hand():
    conv = lambda: torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)  # noqa: E731
    sizes = complexity(conv, 3, 8)
    assert sizes == {"params": 5 * 3 * 9, "flops": 2 * 5 * 3 * 9 * 8 * 8}  # a multiply-add is 2 FLOPs


def test_width_for_parameters_finds_the_nearest_width():
    build = lambda w: ResNetUNet(3, 2, w, 2, 1)  # noqa: E731
    target = count_parameters(build(12)) + 10
    assert width_for_parameters(build, target) == 12
    assert width_for_parameters(build, 1) == 1


@pytest.mark.parametrize("target", [47_370, 53_278, 56_206])
def test_a_small_baseline_meets_its_budget_within_ten_percent(target):
    """At a few channels one channel more is a 20-40 % step; a fractional width closes the gap."""
    build = lambda w: ResNetUNet(3, 2, w, 3, 2)  # noqa: E731
    whole = count_parameters(build(width_for_parameters(build, target)))
    width = width_for_parameters(build, target, fractions=8)
    assert abs(count_parameters(build(width)) / target - 1) <= 0.10
    assert abs(count_parameters(build(width)) - target) <= abs(whole - target)
    assert ResNetUNet(3, 2, 4.0).stem[0][0].out_channels == ResNetUNet(3, 2, 4).stem[0][0].out_channels == 4


@pytest.mark.slow
def test_training_records_its_size_and_retrains_wider(tmp_path):
    genotype, search_dir = search(SMOKE, TINY, out=str(tmp_path / "s"))
    g = str(search_dir / "genotype.json")
    _, narrow = train(SMOKE, TINY, genotype=g, out=str(tmp_path / "narrow"))
    _, wide = train(SMOKE, TINY + ["train.channels=16"], genotype=g, out=str(tmp_path / "wide"))
    small, big = (json.loads((d / "model.json").read_text()) for d in (narrow, wide))
    assert small["channels"] == 8 and big["channels"] == 16  # the supernet stays at space.channels=8
    assert big["params"] > 3 * small["params"] and big["flops"] > 3 * small["flops"]
    records = read_jsonl(narrow / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["params"] == small["params"]
    assert f"{small['params']:,} parameters" in (narrow / "log.txt").read_text()


@pytest.mark.slow
def test_target_params_sizes_a_genotype_and_the_baseline(tmp_path):
    _, base = train(SMOKE, TINY + ["train.target_params=60000"], baseline="resnet_unet", out=str(tmp_path / "b"))
    _, cell = train(
        SMOKE, TINY + ["train.target_params=60000", "train.epochs=1"], genotype="random", out=str(tmp_path / "c")
    )
    for run in (base, cell):
        params = json.loads((run / "model.json").read_text())["params"]
        assert params == pytest.approx(60000, rel=0.2)


@pytest.mark.slow
def test_train_evaluate_test_writes_the_evaluation(tmp_path):
    out = tmp_path / "run"
    res = run_cli(
        "train",
        "--config",
        SMOKE,
        *set_args(TINY),
        "--baseline",
        "resnet_unet",
        "--out",
        str(out),
        "--evaluate",
        "test",
    )
    assert res.returncode == 0, res.stderr
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["split"] == "test" and 0 <= ev["miou"] <= 1
