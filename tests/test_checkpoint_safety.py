"""No code from a checkpoint: every command that reads one uses torch's restricted unpickler.

A crafted ``.pt`` whose pickle calls ``os.system`` is planted where each entry point reads: ``predict``,
``evaluate``, ``export``, ``train --resume`` and ``search --resume``. The command must refuse it (exit 2, one
line), the planted command must not run, and a refused ``--resume`` must leave the run directory byte for byte
as it was. Checkpoints of the earlier format (numpy inside) are refused with the command that converts them,
``hpcnas checkpoint upgrade``, which is the only reader that unpickles, on the user's word.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpcnas.checkpoint import load_checkpoint, save_checkpoint, upgrade_checkpoint
from hpcnas.errors import UserError
from hpcnas.pipeline import search, train
from tests.conftest import ROOT, run_cli

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["data.synth.n=16", "data.synth.size=32", "space.channels=8", "space.depth=2", "space.nodes=2", "device=cpu"]


class Planted:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> None:
    """Replace ``path`` with a checkpoint-looking file whose pickle runs a command."""
    torch.save({"epoch": 0, "model": {}, "spec": Planted(marker), "rng": Planted(marker)}, path)


def tree_digest(folder: Path) -> dict:
    """Every file below ``folder`` with its bytes' hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny training run."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(SMOKE, TINY + ["train.epochs=1", "train.select_from_epoch=1"], genotype="random", out=str(out))
    return out


def test_a_planted_checkpoint_runs_no_code_when_loaded(tmp_path):
    marker = tmp_path / "RAN"
    plant(tmp_path / "evil.pt", marker)
    with pytest.raises(UserError, match="loading would have to run: not loaded"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the control: the plant is real
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "train --resume", "search --resume"])
def test_no_entry_point_runs_code_from_a_planted_checkpoint(command, trained, tmp_path):
    marker = tmp_path / "RAN"
    if command.endswith("--resume"):
        kind = command.split()[0]
        run = tmp_path / "run"
        if kind == "train":
            train(SMOKE, TINY + ["train.epochs=1", "train.select_from_epoch=1"], genotype="random", out=str(run))
        else:
            search(SMOKE, TINY + ["search.epochs=1", "search.arch_start_epoch=1"], out=str(run))
        plant(run / "checkpoints" / "latest.pt", marker)
        before = tree_digest(run)
        proc = run_cli(kind, "--resume", str(run))
        assert tree_digest(run) == before  # a refused resume changes nothing: no heartbeat, lock or log written
    else:
        evil = tmp_path / "best.pt"
        plant(evil, marker)
        scene = tmp_path / "scene.png"
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(scene)
        args = {
            "predict": ["--input", str(scene), "--out", str(tmp_path / "p")],
            "evaluate": ["--data", str(trained / "data.h5"), "--split", "val"],
            "export": ["--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        }[command]
        proc = run_cli(command, "--checkpoint", str(evil), *args)
        assert not (tmp_path / "p").exists() and not (tmp_path / "m.onnx").exists()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hpcnas: error: ")
    assert "hpcnas checkpoint upgrade" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_an_earlier_format_checkpoint_is_refused_then_upgraded_on_request(trained, tmp_path):
    state = torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # as hpcnas wrote it before: a numpy array inside
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with pytest.raises(UserError) as refused:
        load_checkpoint(old)
    assert f"hpcnas checkpoint upgrade {old}" in str(refused.value)
    proc = run_cli("checkpoint", "upgrade", str(old))
    assert proc.returncode == 0 and proc.stdout == f"{old}: converted: it now loads without running code\n"
    upgraded = load_checkpoint(old)
    assert torch.equal(upgraded["rng"]["torch"], state["rng"]["torch"])
    assert all(torch.equal(upgraded["model"][k], v) for k, v in state["model"].items())
    np.random.set_state(upgraded["rng"]["numpy"])  # the converted RNG state still restores numpy exactly
    after = np.random.random(3)
    np.random.set_state(state["rng"]["numpy"])
    assert np.array_equal(after, np.random.random(3))
    assert upgrade_checkpoint(str(old)) == "already in the safe format: nothing to do"


@pytest.mark.slow
def test_upgrade_refuses_what_is_not_a_checkpoint_and_leaves_it(tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"not a pickle at all")
    proc = run_cli("checkpoint", "upgrade", str(junk))
    assert proc.returncode == 2 and proc.stderr.startswith(f"hpcnas: error: {junk}: unreadable checkpoint")
    assert junk.read_bytes() == b"not a pickle at all"


def test_checkpoints_are_written_in_the_safe_format(tmp_path):
    random.seed(3)
    state = {"model": {"w": torch.ones(2)}, "rng": {"numpy": np.random.get_state(), "python": random.getstate()},
             "best": np.float32(0.5), "sums": {"loss": np.float64(1.25)}}  # fmt: skip
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["best"] == 0.5 and isinstance(loaded["best"], float) and loaded["sums"]["loss"] == 1.25
    assert loaded["rng"]["python"] == random.getstate()
    assert oct((tmp_path / "c.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
