"""search.precision / train.precision (bf16 autocast) and channels_last: what they change, and what they keep."""

from __future__ import annotations

import random

import pytest
import torch

from hpcnas.config import load_config
from hpcnas.pipeline import train
from hpcnas.rundir import read_jsonl
from hpcnas.space.searchspace import SearchSpace
from tests.conftest import run_cli, set_args
from tests.search.test_continuous import SMOKE, TINY, _runner


def _one_step(runner, epoch=1):
    """One search step (both the architecture and the weight step from epoch 1 on); the dtypes the weight
    step's first convolution saw."""
    seen = []
    conv = next(m for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    try:
        sums = runner.train_step(epoch, next(iter(runner.epoch_batches(epoch, 0))))
    finally:
        handle.remove()
    return sums, seen


@pytest.mark.slow
def test_bf16_runs_the_weight_step_in_bf16_and_keeps_theta_and_the_weights_in_fp32(tmp_path):
    fp32 = _runner(tmp_path / "fp32")
    bf16 = _runner(tmp_path / "bf16", ["search.precision=bf16"])
    reference, seen32 = _one_step(fp32)
    sums, seen = _one_step(bf16)
    assert seen32 == [(torch.float32, torch.float32)] * 2
    assert seen[0] == (torch.float32, torch.float32)  # the architecture step: fp32
    assert seen[1][1] == torch.bfloat16  # the weight step: autocast
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in bf16.model.parameters())
    assert sums["arch_loss"] == reference["arch_loss"]  # the same start, and theta's step in fp32: identical
    assert sums["train_loss"] == pytest.approx(reference["train_loss"], rel=0.05)  # bf16 has 8 bits of mantissa
    assert sums["train_loss"] != reference["train_loss"]


@pytest.mark.slow
def test_channels_last_is_refused_on_a_cpu_where_onednn_corrupts_memory(tmp_path):
    proc = run_cli(
        "search", "--config", SMOKE, "--out", str(tmp_path / "s"), *set_args(TINY + ["search.channels_last=true"])
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.startswith("hpcnas: error: key 'search.channels_last': is for GPUs")
        and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "s").exists()  # nothing left behind


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="channels_last runs on GPUs only")
def test_channels_last_lays_the_network_out_nhwc_and_computes_the_same_on_a_gpu(tmp_path):
    cuda = ["device=cuda"]
    plain = _runner(tmp_path / "plain", cuda)
    nhwc = _runner(tmp_path / "nhwc", cuda + ["search.channels_last=true"])
    convs = [m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    reference, _ = _one_step(plain)
    sums, _ = _one_step(nhwc)
    assert sums == pytest.approx(reference, rel=1e-3)


@pytest.mark.slow
def test_a_retrain_in_bf16_trains_and_evaluates(tmp_path):
    sets = TINY + ["train.epochs=1", "train.precision=bf16"]
    genotype = tmp_path / "g.json"
    SearchSpace.from_config(load_config(SMOKE, sets)).sample(random.Random(0)).save(genotype)
    _, run_dir = train(SMOKE, sets, genotype=str(genotype), out=str(tmp_path / "t"), evaluate_split="test")
    losses = [r["train_loss"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert losses and all(0 < loss < 10 for loss in losses)
    assert (run_dir / "evaluation.json").exists()


def test_an_unknown_precision_is_bad_input(tmp_path):
    proc = run_cli("search", "--config", SMOKE, "--out", str(tmp_path / "s"), "--set", "search.precision=fp16")
    assert proc.returncode == 2 and proc.stderr.startswith("hpcnas: error:") and "precision" in proc.stderr
    assert not (tmp_path / "s").exists()
