"""The supernet search loop: frozen architecture before arch_start_epoch, metrics, exact resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hpcnas.config import load_config
from hpcnas.pipeline import search
from hpcnas.rundir import read_jsonl
from hpcnas.space.genotype import Genotype
from tests.conftest import ROOT, run_cli, run_interrupted_in_epoch, run_signalled_at_step, set_args

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
    "search.lr=0.05",
    "device=cpu",
]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _runner(tmp_path, extra=()):
    """The search loop of the tiny smoke config, on the device the config names (TINY: the CPU)."""
    from hpcnas.data.hdf5 import read_info
    from hpcnas.pipeline import resolve_data
    from hpcnas.runtime import select_device
    from hpcnas.search.continuous import SupernetSearch

    cfg = load_config(SMOKE, TINY + list(extra))
    data = resolve_data(cfg, tmp_path)
    return SupernetSearch(cfg, tmp_path, data, read_info(data), select_device(cfg.device))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["gaea", "adam"])
def test_architecture_frozen_before_start_epoch(tmp_path, optimizer):
    runner = _runner(tmp_path, [f"search.arch_optimizer={optimizer}", "search.arch_start_epoch=2"])  # counted from 1
    before = [p.detach().clone() for p in runner.model.arch_parameters()]
    weights_before = [p.detach().clone() for p in runner.model.weight_parameters()]
    runner.train_epoch(0)
    for a, b in zip(before, runner.model.arch_parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, runner.model.weight_parameters()))
    runner.train_epoch(1)
    assert any(not torch.equal(a, b) for a, b in zip(before, runner.model.arch_parameters()))
    if optimizer == "gaea":  # still probability vectors
        for p in runner.model.arch_parameters():
            torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))


@pytest.mark.slow
def test_search_writes_the_run_directory(tmp_path):
    genotype, run_dir = search(SMOKE, TINY, out=str(tmp_path / "run"))
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    first = records[0]
    for key in ("train_loss", "val_miou", "entropy", "lr", "arch_lr", "time_s", "peak_memory_mb", "genotype"):
        assert key in first
    assert set(first["entropy"]) == {"reduce", "normal", "mean"}
    assert first["entropy"]["mean"] == pytest.approx(math.log(8))  # uniform theta before arch_start_epoch
    assert records[-1]["entropy"]["mean"] < math.log(8)
    assert records[0]["lr"] == pytest.approx(0.05) and records[1]["lr"] < 0.05  # cosine annealing
    assert Genotype.load(str(run_dir / "genotype.json")) == genotype
    assert (run_dir / "checkpoints" / "latest.pt").exists() and (run_dir / "config.yaml").exists()
    assert load_config(str(run_dir / "config.yaml")).search.epochs == 3


def test_a_channel_generator_state_from_another_device_warns_and_goes_on(tmp_path, caplog):
    """A CUDA generator's state (16 bytes) in a checkpoint resumed on a CPU: a warning, not a crash."""
    import logging

    runner = _runner(tmp_path, ["search.channel_sampling=random"])
    assert runner.model.channel_rng.device == torch.device("cpu")  # built where the search runs
    state = runner.extra_state()
    before = runner.model.channel_rng.get_state()
    with caplog.at_level(logging.WARNING, logger="hpcnas"):
        runner.load_extra_state(dict(state, channel_rng=torch.zeros(16, dtype=torch.uint8)))
    assert "another kind of device" in caplog.text
    assert torch.equal(runner.model.channel_rng.get_state(), before)
    runner.load_extra_state(state)  # its own state: no warning
    assert caplog.text.count("another kind of device") == 1


def _final_theta(run_dir):
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    return {k: v for k, v in state["model"].items() if k.startswith("arch.")}


SCALED_STEP = ["search.arch_lr=null", "search.arch_movement=3"]


@pytest.mark.slow
@pytest.mark.parametrize("workers, step", [(0, []), (2, []), (0, SCALED_STEP)], ids=["fixed", "workers", "scaled"])
def test_resume_in_process_is_exact(tmp_path, monkeypatch, workers, step):
    """Interrupt a search inside epoch 2 (after epoch 1's checkpoint); the resumed run equals an uninterrupted one,
    also with DataLoader workers (each sample's augmentation has its own seed), and with a scaled architecture
    step (its running gradient scale is in the checkpoint)."""
    from hpcnas.search.continuous import SupernetSearch

    args = TINY + [f"data.num_workers={workers}"] + step
    full, full_dir = search(SMOKE, args, out=str(tmp_path / "full"))
    run_interrupted_in_epoch(monkeypatch, SupernetSearch, 2, lambda: search(SMOKE, args, out=str(tmp_path / "cut")))
    resumed, cut_dir = search(None, [], resume=str(tmp_path / "cut"))
    assert resumed == full
    for k, v in _final_theta(full_dir).items():
        assert torch.equal(v, _final_theta(cut_dir)[k]), k
    assert [r["epoch"] for r in read_jsonl(cut_dir / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.slow
def test_signal_mid_epoch_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGUSR2 inside epoch 1: a mid-epoch checkpoint, Interrupted; the resumed run skips the trained
    batches and ends bit-identical to an uninterrupted one (augmentation and channel sampling included)."""
    from hpcnas.search.continuous import SupernetSearch

    config = TINY + ["data.augment=true"]
    full, full_dir = search(SMOKE, config, out=str(tmp_path / "full"))
    cut_dir = tmp_path / "cut"
    run_signalled_at_step(monkeypatch, SupernetSearch, 1, 0, lambda: search(SMOKE, config, out=str(cut_dir)))
    state = torch.load(cut_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 1) and set(state["sums"]) == {"train_loss", "arch_loss"}
    assert [r["epoch"] for r in read_jsonl(cut_dir / "metrics.jsonl")] == [1]
    resumed, _ = search(None, [], resume=str(cut_dir))
    assert resumed == full
    for k, v in _final_theta(full_dir).items():
        assert torch.equal(v, _final_theta(cut_dir)[k]), k

    def strip(records):  # times and memory differ from run to run
        return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "peak_memory_mb"} for r in records]

    assert strip(read_jsonl(cut_dir / "metrics.jsonl")) == strip(read_jsonl(full_dir / "metrics.jsonl"))


@pytest.mark.slow
def test_usr2_exits_75_and_resume_existing_finishes(tmp_path):
    """The command line: SIGUSR2 -> checkpoint, one line, exit 75; the same command with
    --resume-existing continues it (what a requeued SLURM job runs) to the uninterrupted genotype."""
    args = ["search", "--config", SMOKE, *set_args(TINY + ["search.epochs=4"])]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    again = [*args, "--out", str(run), "--resume-existing"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcnas.cli", *again],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (run / "checkpoints" / "latest.pt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be signalled"
    os.kill(proc.pid, signal.SIGUSR2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "stopped by SIGUSR2" in err and f"continue with --resume {run}" in err
    stop_line = next(line for line in err.splitlines() if "stopped by SIGUSR2" in line)
    assert stop_line.removeprefix("hpcnas: ") in (run / "log.txt").read_text()  # the log says it too
    assert not (run / "genotype.json").exists()
    done = run_cli(*again)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "genotype.json").read_text()) == json.loads(
        (tmp_path / "ref" / "genotype.json").read_text()
    )
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_killed_search_resumes_exactly(tmp_path):
    """SIGKILL a real search after its first checkpoint; --resume ends with the same genotype and theta."""
    args = ["search", "--config", SMOKE, *set_args(TINY + ["search.epochs=4"])]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    victim = tmp_path / "victim"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcnas.cli", *args, "--out", str(victim)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    ckpt = victim / "checkpoints" / "latest.pt"
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (victim / "genotype.json").exists()
    done = run_cli("search", "--resume", str(victim))
    assert done.returncode == 0, done.stderr
    assert json.loads((victim / "genotype.json").read_text()) == json.loads(
        (tmp_path / "ref" / "genotype.json").read_text()
    )
    ref_theta, got_theta = _final_theta(tmp_path / "ref"), _final_theta(victim)
    assert ref_theta.keys() == got_theta.keys()
    for k in ref_theta:
        assert torch.equal(ref_theta[k], got_theta[k]), k
    assert [r["epoch"] for r in read_jsonl(victim / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_search_inside_the_resnet_unet_retrains_and_exports_its_chosen_blocks(tmp_path):
    from hpcnas.pipeline import train

    space = ["space.topology=resnet_unet", "space.cells=per_stage", "space.searchable=[decoder,skip]"]
    genotype, run_dir = search(SMOKE, TINY + space, out=str(tmp_path / "run"))
    roles = ["decoder@0", "decoder@1", "skip@0", "skip@1"]
    assert [role for role, _ in genotype.cells] == roles
    assert set(read_jsonl(run_dir / "metrics.jsonl")[-1]["entropy"]) == set(roles) | {"mean"}
    epochs = ["train.epochs=1", "train.select_from_epoch=0", "train.batch_size=4"]
    _, trained = train(
        SMOKE, TINY + epochs + space[:1], genotype=str(run_dir / "genotype.json"), out=str(tmp_path / "t")
    )
    assert Genotype.load(str(trained / "genotype.json")) == genotype
    onnx = tmp_path / "net.onnx"
    export = run_cli(
        "export", "--checkpoint", str(trained / "checkpoints" / "best.pt"), "--format", "onnx", "--out", str(onnx)
    )
    assert export.returncode == 0 and "parity ok" in export.stdout + export.stderr, export.stderr[-2000:]


AUTO = ["space.topology=resnet_unet", "space.cells=per_stage", "space.searchable=auto:2", "search.epochs=4"]


@pytest.mark.slow
@pytest.mark.parametrize("cut_epoch", [2, 3], ids=["killed-before-the-pick-is-saved", "killed-after"])
def test_auto_k_searches_the_blocks_the_warm_up_decided_most_and_resumes_exactly(tmp_path, monkeypatch, cut_epoch):
    from hpcnas.search.continuous import SupernetSearch

    full, full_dir = search(SMOKE, TINY + AUTO, out=str(tmp_path / "full"))
    records = read_jsonl(full_dir / "metrics.jsonl")
    warm = {role: e for role, e in records[1]["entropy_normalized"].items() if role != "mean"}  # epoch 2: warm-up
    assert len(warm) == 6 and records[1]["searched_blocks"] == list(warm)
    picked = sorted(warm, key=warm.get)[:2]
    assert sorted(records[-1]["searched_blocks"]) == sorted(picked)
    assert set(records[-1]["entropy_normalized"]) == set(picked) | {"mean"}
    assert sorted(role for role, _ in full.cells) == sorted(picked)  # the others: hand-designed, left out
    from hpcnas.report.build import report

    summary = report([str(full_dir)], str(tmp_path / "report"))
    assert summary.exists() and (tmp_path / "report" / "entropy.png").exists()
    drawing = (tmp_path / "report" / f"cell_full_{picked[0]}.dot").read_text()
    assert "residual" not in drawing  # a block cell's output is its op's, which holds any residual
    cut = tmp_path / "cut"
    run_interrupted_in_epoch(monkeypatch, SupernetSearch, cut_epoch, lambda: search(SMOKE, TINY + AUTO, out=str(cut)))
    resumed, cut_dir = search(None, [], resume=str(cut))
    assert resumed == full
    for k, v in _final_theta(full_dir).items():
        assert torch.equal(v, _final_theta(cut_dir)[k]), k


@pytest.mark.parametrize(
    "extra, message",
    [
        (["search.epochs=2"], "auto:2 picks the blocks after the warm-up epoch search.arch_start_epoch=2"),
        (["space.searchable=auto:7"], "auto:7, but the network has 6 blocks"),
        (["search.decode.method=perturbation"], "auto:2 decodes by theta"),
    ],
)
def test_auto_k_is_refused_where_it_cannot_work_and_leaves_nothing(tmp_path, extra, message):
    from hpcnas.errors import UserError

    with pytest.raises(UserError, match=message):
        search(SMOKE, TINY + AUTO + extra, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_per_stage_search_writes_a_cell_per_level_that_retrains_and_exports(tmp_path):
    from hpcnas.pipeline import train

    genotype, run_dir = search(SMOKE, TINY + ["space.cells=per_stage"], out=str(tmp_path / "run"))
    roles = ["reduce@1", "reduce@2", "normal@0", "normal@1"]
    assert genotype.per_stage and [role for role, _ in genotype.cells] == roles
    assert set(read_jsonl(run_dir / "metrics.jsonl")[-1]["entropy"]) == set(roles) | {"mean"}
    assert set(json.loads((run_dir / "arch.json").read_text())["ops"]) == set(roles)
    assert json.loads((run_dir / "genotype.json").read_text())["cells"].keys() == set(roles)
    # the genotype decides the cells of a retraining, whatever space.cells says
    epochs = ["train.epochs=1", "train.select_from_epoch=0", "train.batch_size=4"]
    _, trained = train(SMOKE, TINY + epochs, genotype=str(run_dir / "genotype.json"), out=str(tmp_path / "train"))
    assert Genotype.load(str(trained / "genotype.json")) == genotype
    export = run_cli(
        "export",
        "--checkpoint",
        str(trained / "checkpoints" / "best.pt"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "net.onnx"),
    )
    assert export.returncode == 0 and "parity ok" in export.stdout + export.stderr, export.stderr[-2000:]
    wrong_depth = run_cli(
        "train",
        "--config",
        SMOKE,
        "--genotype",
        str(run_dir / "genotype.json"),
        "--out",
        str(tmp_path / "refused"),
        *set_args(TINY + epochs + ["space.depth=3"]),
    )
    assert wrong_depth.returncode == 2 and not (tmp_path / "refused").exists()
    assert (
        wrong_depth.stderr.strip()
        .splitlines()[-1]
        .endswith("key 'cells': has a cell for each of 2 levels, the config's space.depth is 3")
    )
