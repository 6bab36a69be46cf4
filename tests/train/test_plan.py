"""Before a run starts: --plan measures what it will cost, and a search that could never train theta is refused."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.mark.slow
def test_plan_prints_size_memory_and_step_time_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    proc = run_cli(
        "train", "--config", SMOKE, "--genotype", "random", "--plan", "--out", str(out),
        *set_args(["device=cpu", "train.val_every=2"]), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert text.startswith("plan: train darts_unet on cpu (fp32), batch 4 of 32 px tiles")
    assert re.search(r"network +[\d,]+ parameters", text) and re.search(r"memory +about [\d,]+ MB peak", text)
    step = float(re.search(r"step +([\d.e-]+) s \(median of 3 timed steps", text).group(1))
    assert step > 0 and "validation every 2 epochs and the last" in text and "for 10 epochs" in text
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_search_whose_architecture_would_never_step_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "s"
    proc = run_cli("search", "--config", SMOKE, "--out", str(out), *set_args(["search.epochs=1", "device=cpu"]))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hpcnas: error: key 'search.arch_start_epoch': search.arch_start_epoch=2 comes after the last epoch "
        "(search.epochs=1): the architecture would never be trained; set search.arch_start_epoch to at most 1"
    ]
    assert not out.exists()
    proc = run_cli("search", "--config", SMOKE, "--out", str(out), *set_args(["search.arch_lr=0", "device=cpu"]))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hpcnas: error: key 'search.arch_lr': search.arch_lr=0: the architecture's steps would never move it; "
        "leave it unset for the optimizer's own step size, or give a positive one"
    ]
    assert not out.exists()
    both = ["search.arch_lr=5", "search.arch_movement=3", "device=cpu"]
    proc = run_cli("search", "--config", SMOKE, "--out", str(out), *set_args(both))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hpcnas: error: key 'search.arch_movement': search.arch_lr=5 and search.arch_movement=3 both set theta's "
        "step: keep one (set the other to null)"
    ]
    assert not out.exists()
