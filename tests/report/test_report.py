"""Reports: every expected file exists and every PNG is a valid image."""

from __future__ import annotations

import json
import random
import time

import numpy as np
from PIL import Image

from hpcnas.report import graphs
from hpcnas.report.build import report
from hpcnas.space.searchspace import SearchSpace
from tests.conftest import run_cli


def fake_run(path, topology="darts_unet", with_eval=True, history=False):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as fh:
        for e in range(1, 5):
            entropy = {"normal": 1.0 - 0.1 * e, "reduce": 1.0 - 0.2 * e, "mean": 1.0 - 0.15 * e}
            fh.write(
                json.dumps(
                    {"epoch": e, "train_loss": 1.0 / e, "val_miou": 0.5 + 0.05 * e, "entropy_normalized": entropy}
                )
                + "\n"
            )
    (path / "model.json").write_text(json.dumps({"params": 123456, "flops": 7.5e9}))
    SearchSpace.of(topology, depth=2).sample(random.Random(1)).save(path / "genotype.json")
    if with_eval:
        curve = {
            "thresholds": [0.1 * k for k in range(1, 10)],
            "precision": list(np.linspace(0.9, 0.1, 9)),
            "recall": list(np.linspace(0.8, 0.0, 9)),
        }
        (path / "evaluation.json").write_text(
            json.dumps({"miou": 0.7, "iou_background": 0.9, "iou_object": 0.5, "objects": curve})
        )
        rng = np.random.default_rng(0)
        np.savez_compressed(
            path / "predictions.npz",
            image_0=rng.integers(0, 255, (20, 20, 3), dtype=np.uint8),
            truth_0=np.zeros((20, 20), np.uint8),
            pred_0=np.ones((20, 20), np.uint8),
            names=np.array(["img"]),
        )
    if history:
        now = time.time()
        with open(path / "history.jsonl", "w") as fh:
            for k, status in enumerate(["ok", "ok", "oom", "ok", "crashed", "timeout"]):
                genotype = SearchSpace.of(topology, depth=2).sample(random.Random(k)).to_dict()
                fh.write(
                    json.dumps(
                        {
                            "id": k,
                            "genotype": genotype,
                            "status": status,
                            "fitness": 0.1 * k if status == "ok" else None,
                            "objectives": {"params": 1000.0 * (k + 1)},
                            "start": now + k,
                            "end": now + k + 5,
                        }
                    )
                    + "\n"
                )
        (path / "config.yaml").write_text("evolve:\n  objectives: [miou, params]\n")


def test_report_files_are_valid_images(tmp_path):
    fake_run(tmp_path / "a", "darts_unetpp", history=True)
    fake_run(tmp_path / "b", "resnext_unet")
    out = report([str(tmp_path / "a"), str(tmp_path / "b")])
    assert out == tmp_path / "a" / "report"
    expected = {
        "curves.png",
        "entropy.png",
        "precision_recall.png",
        "predictions_a.png",
        "evolution_a.png",
        "accuracy_costs_a.png",
        "hypervolume_a.png",
    }
    if graphs.have_dot():
        expected |= {"cell_a_reduce.png", "cell_a_normal.png", "network_a.png", "cell_b_down.png", "cell_b_up.png"}
    pngs = {p.name for p in out.glob("*.png")}
    assert expected <= pngs
    for name in pngs:
        with Image.open(out / name) as im:
            im.verify()
            assert im.size[0] > 100 and im.size[1] > 50
    summary = (out / "summary.md").read_text()
    assert "| a |" in summary and "| b |" in summary and "0.7000" in summary
    assert "| run | state | epochs |" in summary  # fake runs have no heartbeat: their state is unknown
    assert "| a | unknown |" in summary
    assert "background 0.900, object 0.500" in summary and "123,456" in summary and "| 7.5 |" in summary
    # the front of (miou up, params down) among the ok evaluations 0, 1, 3: every one trades one for the other
    assert "## Pareto front of a: miou, params" in summary and "3 of 6 evaluations" in summary
    assert [line.split(" | ")[0] for line in summary.splitlines() if line.startswith(("| 0 ", "| 1 ", "| 3 "))] == [
        "| 0",
        "| 1",
        "| 3",
    ]


def test_report_cli_missing_dir(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such run directory" in proc.stderr


def test_report_without_graphviz_still_writes_everything_else(tmp_path, monkeypatch):
    monkeypatch.setattr(graphs, "have_dot", lambda: False)
    fake_run(tmp_path / "a")
    out = report([str(tmp_path / "a")])
    assert not list(out.glob("cell_*")) and (out / "precision_recall.png").exists()
    assert "graphviz" in (out / "summary.md").read_text()


def test_a_search_whose_theta_did_not_move_gets_a_note_with_the_fix(tmp_path):
    fake_run(tmp_path / "moved", with_eval=False)
    fake_run(tmp_path / "flat", with_eval=False)
    lines = [json.loads(line) for line in (tmp_path / "flat" / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.update(steps=5, arch_updates=True, arch_lr=0.1, entropy_normalized={"normal": 0.996, "mean": 0.996})
    (tmp_path / "flat" / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = (report([str(tmp_path / "moved"), str(tmp_path / "flat")]) / "summary.md").read_text()
    notes = summary.split("## Notes", 1)[1]
    assert "- flat: theta learned nothing: its mean edge entropy ended at 0.996" in notes
    assert "after 20 architecture steps" in notes and "moved:" not in notes
