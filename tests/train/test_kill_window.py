"""The checkpoint is an epoch's commit point: a kill between any two writes of an epoch resumes to the same end.

Each test leaves a run directory as a SIGKILL at one instant would (the files are cut exactly as the kill cuts
them), resumes it, and compares the metrics, weights and best checkpoint with an uninterrupted run's.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hpcnas.pipeline import train
from hpcnas.train.trainer import Trainer
from tests.conftest import ROOT, run_interrupted_in_epoch

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["data.synth.n=16", "data.synth.size=32", "space.channels=8", "space.depth=2", "space.nodes=2",
        "train.epochs=2", "train.select_from_epoch=1", "train.batch_size=4", "device=cpu",
        "monitor.tensorboard=false"]  # fmt: skip
ARGS = dict(genotype="random", seed=1)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run: what every resumed one must end as."""
    out = tmp_path_factory.mktemp("full") / "run"
    train(SMOKE, TINY, out=str(out), **ARGS)
    return out


def _same_end(full, cut) -> None:
    assert (cut / "metrics.jsonl").read_text().count("\n") == 2
    drop = ("time_s", "train_s", "data_wait_s", "peak_memory_mb")  # wall-clock figures differ between runs
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k not in drop}  # noqa: E731
                          for line in path.read_text().splitlines()]  # fmt: skip
    assert strip(cut / "metrics.jsonl") == strip(full / "metrics.jsonl")
    for name in ("latest.pt", "best.pt"):
        a = torch.load(full / "checkpoints" / name, weights_only=True)["model"]
        b = torch.load(cut / "checkpoints" / name, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def _copy(full, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    (cut / "heartbeat.json").unlink()
    return cut


@pytest.mark.slow
def test_killed_after_the_checkpoint_before_its_metrics_line(full, tmp_path, capsys):
    cut = _copy(full, tmp_path)
    lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
    (cut / "metrics.jsonl").write_text("".join(lines[:-1]))
    train(None, [], resume=str(cut))
    err = capsys.readouterr().err
    assert "hpcnas: warning:" in err and "the line of epoch 2 was missing" in err and "restored from it" in err
    _same_end(full, cut)


def test_killed_while_appending_the_metrics_line(full, tmp_path, capsys):
    cut = _copy(full, tmp_path)
    text = (cut / "metrics.jsonl").read_text()
    (cut / "metrics.jsonl").write_text(text[: len(text) - 40])  # the last line cut short, no newline
    train(None, [], resume=str(cut))
    err = capsys.readouterr().err
    assert err.count("hpcnas: warning:") == 1, err
    assert "the line of epoch 2 was cut off by a kill: restored from the checkpoint" in err
    _same_end(full, cut)


@pytest.mark.slow
def test_lines_past_the_checkpoint_are_dropped_and_their_epochs_run_again(full, tmp_path, monkeypatch, capsys):
    cut = tmp_path / "cut"
    run_interrupted_in_epoch(monkeypatch, Trainer, 1, lambda: train(SMOKE, TINY, out=str(cut), **ARGS))
    lines = (full / "metrics.jsonl").read_text().splitlines(keepends=True)
    with open(cut / "metrics.jsonl", "a") as fh:  # what an earlier hpcnas, which wrote the line first, left
        fh.write(lines[1])
    train(None, [], resume=str(cut))
    err = capsys.readouterr().err
    assert "epochs 2-2 are logged past the checkpoint: dropped, they run again" in err
    _same_end(full, cut)


@pytest.mark.slow
def test_killed_between_the_best_checkpoint_and_the_commit_point(full, tmp_path, monkeypatch):
    cut = tmp_path / "cut"
    run_interrupted_in_epoch(monkeypatch, Trainer, 1, lambda: train(SMOKE, TINY, out=str(cut), **ARGS))
    shutil.copy(full / "checkpoints" / "best.pt", cut / "checkpoints" / "best.pt")  # epoch 2's best, written
    train(None, [], resume=str(cut))  # latest.pt still says epoch 1: epoch 2 runs again, identically
    _same_end(full, cut)


@pytest.mark.slow
def test_resume_of_a_run_with_no_checkpoint_says_it_starts_from_epoch_1(tmp_path, monkeypatch, caplog):
    cut = tmp_path / "cut"
    run_interrupted_in_epoch(monkeypatch, Trainer, 0, lambda: train(SMOKE, TINY, out=str(cut), **ARGS))
    assert not (cut / "checkpoints" / "latest.pt").exists()
    caplog.set_level("INFO", logger="hpcnas")
    train(None, [], resume=str(cut))
    assert f"no checkpoint yet: starting {cut} from epoch 1" in caplog.text
