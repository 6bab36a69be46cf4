"""TensorBoard events written without torch, read back with TensorBoard's own reader."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hpcnas.board import Board
from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def read(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("background", [False, True])
def test_scalars_text_images_and_overlay_charts_round_trip(tmp_path, background):
    board = Board(tmp_path / "tb", background=background)
    board.scalars({"loss": 0.5, "theta": {"e00": {"skip": 0.25, "conv": 0.75}}, "flag": True, "nan": float("nan")}, 3)
    board.scalars_later(lambda: {"late": 2}, 4)
    board.text("genotype", "`darts_unet [...]`", 3)
    board.image("validation/0", np.zeros((8, 20, 3), dtype=np.uint8), 3)
    board.layout({"theta": {"edge 0": ["theta/e00/.*"]}})
    board.close()
    events = read(tmp_path / "tb")
    tags = events.Tags()
    assert set(tags["scalars"]) == {"loss", "theta/e00/skip", "theta/e00/conv", "late"}  # no bool, no NaN
    assert [(s.step, s.value) for s in events.Scalars("theta/e00/conv")] == [(3, 0.75)]
    assert tags["images"] == ["validation/0"] and events.Images("validation/0")[0].width == 20
    assert set(tags["tensors"]) == {"genotype", "custom_scalars__config__"}


def test_the_board_never_imports_torch():
    code = "import sys, hpcnas.board, hpcnas.execution.orchestrator; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_a_search_writes_what_tensorboard_shows(tmp_path):
    out = tmp_path / "s"
    sets = ["search.epochs=3", "monitor.images_every=2", "monitor.images=2"]
    proc = run_cli("search", "--config", SMOKE, "--out", str(out), "--device", "cpu", *set_args(sets))
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = read(out / "tb")
    scalars = set(events.Tags()["scalars"])
    assert [s.step for s in events.Scalars("epoch/val_miou")] == [1, 2, 3]
    assert {
        "epoch/train_loss",
        "epoch/lr",
        "epoch/arch_lr",
        "epoch/peak_memory_mb",
        "epoch/entropy_normalized/normal",
        "step/train_loss",
    } <= scalars
    # theta: every op of every edge of both cell types, one overlay chart per edge
    normal = {t for t in scalars if t.startswith("theta/normal/")}
    assert len(normal) == 5 * 8 and "theta/normal/e04/skip_connect" in normal  # 2 nodes: 2 + 3 edges, 8 ops
    assert sorted(events.Tags()["images"]) == ["validation/0", "validation/1"]
    assert [i.step for i in events.Images("validation/0")] == [2, 3]  # every 2 epochs, and the last
    assert "genotype" in events.Tags()["tensors"]

    off = tmp_path / "off"
    proc = run_cli(
        "search",
        "--config",
        SMOKE,
        "--out",
        str(off),
        "--device",
        "cpu",
        *set_args(["search.epochs=1", "search.arch_start_epoch=1", "monitor.tensorboard=false"]),
    )
    assert proc.returncode == 0 and not (off / "tb").exists()
