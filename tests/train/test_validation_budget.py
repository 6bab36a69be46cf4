"""Validation at real sizes: a budget (every N epochs, a fixed subset), progress while it runs, a stop inside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from hpcnas.data.hdf5 import read_info
from hpcnas.data.torch_dataset import validation_subset
from hpcnas.pipeline import train
from hpcnas.rundir import read_jsonl
from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def test_the_capped_subset_is_fixed_sorted_and_the_whole_split_when_it_fits():
    chosen = validation_subset(441, 60)
    assert chosen == validation_subset(441, 60) == sorted(set(chosen)) and len(chosen) == 60
    assert all(0 <= k < 441 for k in chosen)
    assert validation_subset(10, 60) == validation_subset(10, None) == list(range(10))


@pytest.mark.slow
def test_validation_every_second_epoch_on_a_subset_then_the_selected_checkpoint_on_the_whole_split(tmp_path):
    sets = ["data.synth.n=40", "train.epochs=3", "train.select_from_epoch=1", "train.val_every=2"]
    sets += ["train.val_max_tiles=4", "train.max_steps_per_epoch=2", "device=cpu"]
    _, run = train(SMOKE, sets, genotype="random", out=str(tmp_path / "t"))
    records = read_jsonl(run / "metrics.jsonl")
    assert ["val_miou" in r for r in records] == [False, True, True]  # epoch 2, and the last one
    full = json.loads((run / "validation.json").read_text())
    assert full["tiles"] == read_info(str(run / "data.h5")).split_sizes["val"] > 4 and 0 <= full["val_miou"] <= 1
    best = max((r for r in records if "val_miou" in r), key=lambda r: r["val_miou"])
    assert full["epoch"] == best["epoch"]
    log = (run / "log.txt").read_text()
    assert f"selected checkpoint (epoch {best['epoch']}): val mIoU {full['val_miou']:.4f} on the whole split" in log
    assert "epoch 1/3  loss" in log and "val mIoU -" in log  # an epoch without validation says so


@pytest.mark.slow
def test_a_stop_while_validating_saves_the_epoch_and_the_resume_ends_like_an_uninterrupted_run(tmp_path):
    sets = ["data.synth.n=240", "data.synth.val_fraction=0.6", "search.val_max_tiles=120", "search.epochs=2"]
    sets += ["search.arch_start_epoch=1", "search.max_steps_per_epoch=2", "search.batch_size=2", "device=cpu"]
    out = tmp_path / "stopped"
    env = dict(os.environ, HPCNAS_PROGRESS_S="0")  # a progress line after every batch
    cmd = [sys.executable, "-m", "hpcnas.cli", "search", "--config", SMOKE, "--out", str(out), *set_args(sets)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "validate epoch 1: " in line:  # validating now, with a line that says so
            proc.send_signal(signal.SIGUSR2)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=300) == 75, "".join(lines[-30:])
    text = "".join(lines)
    assert "stopped by SIGUSR2 in epoch 1 while validating" in text
    shown = [int(line.split("validate epoch 1: ")[1].split("/")[0]) for line in lines if "validate epoch 1: " in line]
    assert "/60 batches" in text and max(shown) < 60  # it stopped inside the validation, not after it
    assert read_jsonl(out / "metrics.jsonl") == []  # epoch 1 is not committed: it is validated on resume
    resumed = run_cli("search", "--resume", str(out), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and "at epoch 1, after step 2" in resumed.stderr
    reference = run_cli("search", "--config", SMOKE, "--out", str(tmp_path / "ref"), *set_args(sets), timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    volatile = ("time_s", "train_s", "data_wait_s", "peak_memory_mb")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in volatile} for r in rs]  # noqa: E731
    assert strip(read_jsonl(out / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))
    assert (out / "genotype.json").read_text() == (tmp_path / "ref" / "genotype.json").read_text()
