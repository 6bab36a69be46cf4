"""Retraining, full-image evaluation, baselines, resume; the smoke pipeline learns something."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hpcnas.data.hdf5 import PatchReader, read_info
from hpcnas.data.tile import tile_folder
from hpcnas.pipeline import evaluate, search, train
from hpcnas.rundir import read_jsonl
from hpcnas.train.evaluate import full_images
from hpcnas.train.spec import ModelSpec
from tests.conftest import ROOT, run_cli, run_interrupted_in_epoch, run_signalled_at_step

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = [
    "data.synth.n=16",
    "data.synth.size=32",
    "space.channels=8",
    "space.depth=2",
    "space.nodes=2",
    "train.epochs=3",
    "train.select_from_epoch=2",
    "train.batch_size=4",
    "device=cpu",
    "train.baseline_width=8",
]


def test_tile_and_reassemble_restores_full_images(tmp_path):
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "im", tmp_path / "ma"
    images.mkdir()
    masks.mkdir()
    originals = {}
    for i, (h, w) in enumerate([(50, 70), (33, 40), (64, 64)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 2, (h, w), dtype=np.uint8)
        Image.fromarray(img).save(images / f"{i}.png")
        Image.fromarray(mask).save(masks / f"{i}.png")
        originals[f"{i}.png"] = (img, mask)
    out = tmp_path / "t.h5"
    tile_folder(images, masks, out, size=32, overlap=12, val_fraction=0)
    info = read_info(out)
    seen = 0
    for item in full_images(PatchReader(out, "train", 2), info, "train"):
        img, mask = originals[item["name"]]
        np.testing.assert_array_equal(item["image"], img)
        np.testing.assert_array_equal(item["truth"], mask)
        seen += 1
    assert seen == 3


def test_overlapping_logits_are_averaged(tmp_path):
    """A 'network' that outputs the tile's own index: overlaps must hold the mean of the covering tiles."""
    images, masks = tmp_path / "im", tmp_path / "ma"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((20, 28), np.uint8)).save(masks / "a.png")
    out = tmp_path / "t.h5"
    tile_folder(images, masks, out, size=16, overlap=4, val_fraction=0)  # x tiles at 0, 12; y tiles at 0, 12
    info = read_info(out)
    calls = iter(range(100))

    def predict(batch):
        return np.stack([np.full((2, 16, 16), float(next(calls))) for _ in batch])

    (item,) = list(full_images(PatchReader(out, "train", 2), info, "train", predict, batch_size=1))
    logits = item["logits"][0]
    offsets = PatchReader(out, "train", 2).meta("offsets").tolist()
    assert offsets == [[0, 0], [0, 12], [12, 0], [12, 12]]
    assert logits[0, 0] == 0 and logits[0, 27] == 1 and logits[19, 0] == 2 and logits[19, 27] == 3
    assert logits[0, 13] == pytest.approx(0.5)  # tiles 0 and 1
    assert logits[13, 13] == pytest.approx(1.5)  # all four tiles


@pytest.mark.slow
def test_train_genotype_then_evaluate(tmp_path):
    geno_file = tmp_path / "g.json"
    import random

    from hpcnas.space.searchspace import SearchSpace

    SearchSpace.of("darts_unet", nodes=2, depth=2).sample(random.Random(0)).save(geno_file)
    best, run_dir = train(SMOKE, TINY, genotype=str(geno_file), out=str(tmp_path / "run"))
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert len(records) == 3 and records[-1]["lr"] < records[0]["lr"]
    assert all(0.0 < r["data_wait_s"] < r["train_s"] for r in records)  # the steps' wait for batches, measured
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert state["epoch"] >= 1  # selection counted from select_from_epoch
    assert state["val_miou"] == pytest.approx(max(r["val_miou"] for r in records[1:]))
    result, target = evaluate(str(run_dir / "checkpoints" / "best.pt"), split="test")
    assert target == run_dir and (run_dir / "evaluation.json").exists() and (run_dir / "predictions.npz").exists()
    assert 0.0 <= result["miou"] <= 1.0 and len(result["objects"]["recall"]) == 9
    assert json.loads((run_dir / "genotype.json").read_text())["topology"] == "darts_unet"


@pytest.mark.slow
@pytest.mark.parametrize("how", [{"genotype": "random", "seed": 3}, {"baseline": "resnet_unet"}])
def test_baselines_train(tmp_path, how):
    _, run_dir = train(SMOKE, TINY + ["train.epochs=1", "train.select_from_epoch=0"], out=str(tmp_path / "b"), **how)
    assert (run_dir / "checkpoints" / "best.pt").exists()
    raw = json.loads((run_dir / "model.json").read_text())
    assert raw["kind"] == ("resnet_unet" if "baseline" in how else "genotype")
    spec = ModelSpec.from_dict(raw, "model.json")  # what model.json holds reads back as the spec it was
    assert spec.to_dict() == raw and spec.params == sum(p.numel() for p in spec.build().parameters())
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    spec.build().load_state_dict(best["model"])  # and rebuilds the network its checkpoint holds


def _assert_cut_run_matches_full(tmp_path):
    """The resumed ``cut`` run ended with the weights and losses of the uninterrupted ``full`` one."""
    full = torch.load(tmp_path / "full/checkpoints/latest.pt", weights_only=True)["model"]
    cut = torch.load(tmp_path / "cut/checkpoints/latest.pt", weights_only=True)["model"]
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    assert [r["train_loss"] for r in read_jsonl(tmp_path / "full/metrics.jsonl")] == [
        r["train_loss"] for r in read_jsonl(tmp_path / "cut/metrics.jsonl")
    ]


@pytest.mark.slow
def test_train_resumed_mid_way_matches(tmp_path, monkeypatch):
    from hpcnas.train.trainer import Trainer

    args = dict(genotype="random", seed=1)
    train(SMOKE, TINY, out=str(tmp_path / "full"), **args)
    run_interrupted_in_epoch(monkeypatch, Trainer, 2, lambda: train(SMOKE, TINY, out=str(tmp_path / "cut"), **args))
    train(None, [], resume=str(tmp_path / "cut"))
    _assert_cut_run_matches_full(tmp_path)


@pytest.mark.slow
def test_train_signalled_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    from hpcnas.train.trainer import Trainer

    args = dict(genotype="random", seed=1)
    train(SMOKE, TINY, out=str(tmp_path / "full"), **args)
    run_signalled_at_step(monkeypatch, Trainer, 1, 0, lambda: train(SMOKE, TINY, out=str(tmp_path / "cut"), **args))
    assert torch.load(tmp_path / "cut/checkpoints/latest.pt", weights_only=True)["step"] == 1
    train(None, [], resume=str(tmp_path / "cut"))
    _assert_cut_run_matches_full(tmp_path)


def test_bad_genotype_file_is_one_line(tmp_path):
    bad = tmp_path / "g.json"
    bad.write_text(
        json.dumps({"topology": "darts_unet", "cells": {"reduce": [[["sep_conv_3x3", 0]]], "normal": [[["conv9", 0]]]}})
    )
    proc = run_cli("train", "--config", SMOKE, "--genotype", str(bad), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"hpcnas: error: {bad}: key 'cells.normal[0][0]': unknown op 'conv9' for O_base"
    ]


def test_wrong_node_count_is_one_line(tmp_path):
    import random

    from hpcnas.space.searchspace import SearchSpace

    g = tmp_path / "g.json"
    SearchSpace.of("darts_unet", nodes=3, depth=2).sample(random.Random(0)).save(g)
    proc = run_cli(
        "train", "--config", SMOKE, "--genotype", str(g), "--out", str(tmp_path / "r"), "--set", "data.synth.n=8"
    )
    assert proc.returncode == 2 and "has 3 nodes, the config's space.nodes gives 2" in proc.stderr


@pytest.mark.slow
def test_evaluate_a_search_checkpoint_is_refused(tmp_path):
    _, run_dir = search(
        SMOKE, ["data.synth.n=8", "search.epochs=1", "search.arch_start_epoch=1", "device=cpu"], out=str(tmp_path / "s")
    )
    proc = run_cli("evaluate", "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"))
    assert proc.returncode == 2 and "not a training checkpoint" in proc.stderr


@pytest.mark.slow
def test_smoke_learns_something(tmp_path):
    """The whole pipeline; its test mIoU beats predicting background everywhere."""
    proc = run_cli("smoke", "--out", str(tmp_path / "smoke"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test mIoU" in proc.stdout and "report:" in proc.stdout
    root = tmp_path / "smoke"
    ev = json.loads((root / "train" / "evaluation.json").read_text())
    conf = np.array(ev["confusion"])
    background_iou = conf[0].sum() / conf.sum()  # all-background: class-0 IoU = bg pixels / all pixels, class 1 IoU = 0
    assert ev["miou"] > background_iou / 2 + 0.05
    assert ev["objects"]["recall"][0] > 0
    report = root / "train" / "report"
    for name in ("summary.md", "curves.png", "entropy.png", "precision_recall.png"):
        assert (report / name).exists(), name
