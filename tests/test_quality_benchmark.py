"""benchmarks/quality.py: paired statistics that can tell a real lead from seed noise, a paired plan, one launch."""

from __future__ import annotations

import argparse
import fcntl
import importlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def quality():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("quality")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def rows_of(arm, values, **extra):
    return [{"arm": arm, "seed": s, "test_miou": v, **extra} for s, v in enumerate(values)]


def by_name(paired):
    return {p["comparison"]: p for p in paired}


def test_a_small_lead_that_holds_seed_by_seed_is_beyond_noise_only_when_paired(quality):
    seed_effect = np.array([0.60, 0.68, 0.55, 0.64, 0.71])  # seeds differ far more than the arms do
    rows = rows_of("A", seed_effect + 0.02) + rows_of("B-matched", seed_effect + [0.001, -0.002, 0.0, 0.002, -0.001])
    entry = by_name(quality.paired_differences(rows))["A - B-matched"]
    assert entry["difference"] == pytest.approx(0.02, abs=1e-3)
    assert 0 < entry["ci95"][0] < 0.02 < entry["ci95"][1] and entry["verdict"] == "beyond noise (above 0)"
    # the same numbers with the seeds shuffled in one arm lose the pairing, and the lead is lost in the noise
    shuffled = rows_of("A", seed_effect + 0.02) + rows_of("B-matched", seed_effect[[2, 4, 0, 1, 3]])
    assert by_name(quality.paired_differences(shuffled))["A - B-matched"]["verdict"] == "within noise"


def test_verdicts_below_zero_and_with_too_few_seeds(quality):
    rows = rows_of("A", [0.6, 0.7, 0.65]) + rows_of("D:worse", [0.55, 0.64, 0.61])
    assert by_name(quality.paired_differences(rows))["D:worse - A"]["verdict"] == "beyond noise (below 0)"
    two = rows_of("A", [0.6, 0.7]) + rows_of("D:worse", [0.5, 0.6])
    assert by_name(quality.paired_differences(two))["D:worse - A"]["verdict"].startswith("too few seeds")


def test_a_variant_of_the_hand_designed_network_is_paired_with_b_default(quality):
    rows = rows_of("B-default", [0.6, 0.7, 0.65]) + rows_of("D:resnet-unet", [0.63, 0.72, 0.69])
    entry = by_name(quality.paired_differences(rows))["D:resnet-unet - B-default"]
    assert entry["difference"] == pytest.approx(0.03) and entry["verdict"] == "beyond noise (above 0)"


def test_the_random_cells_are_resampled_with_the_seeds_they_were_trained_under(quality):
    a = [0.66, 0.70, 0.62, 0.68, 0.64]
    cells = [{"arm": "C", "seed": k % 5, "cell": k, "test_miou": a[k % 5] - 0.03 - 0.002 * k} for k in range(8)]
    entry = by_name(quality.paired_differences(rows_of("A", a) + cells))["A - median C"]
    assert entry["seeds"] == 5 and entry["cells"] == 8
    assert entry["difference"] == pytest.approx(np.mean(a) - np.median([c["test_miou"] for c in cells]))
    assert entry["ci95"][0] > 0 and entry["verdict"] == "beyond noise (above 0)"
    spread = [dict(c, test_miou=c["test_miou"] + (0.2 if c["cell"] % 2 else -0.2)) for c in cells]
    assert by_name(quality.paired_differences(rows_of("A", a) + spread))["A - median C"]["verdict"] == "within noise"


def test_choosing_by_an_estimate_retrains_its_top_random_cell_of_each_seed(quality):
    # per seed: A's network and three random cells as (estimate, test mIoU); the estimate ties two cells at seed 2
    seeds = {0: (0.70, [(3, 0.68), (1, 0.60), (2, 0.64)]), 1: (0.66, [(1, 0.70), (5, 0.62), (0, 0.58)]),
             2: (0.69, [(4, 0.66), (4, 0.62), (1, 0.61)]), 3: (0.71, [(0, 0.59), (9, 0.67), (2, 0.63)])}  # fmt: skip
    cells, values = [], []
    for seed, (a, pool) in seeds.items():
        cells.append({"arm": "A", "seed": seed, "test_miou": a})
        values.append(None)  # A's own estimate plays no part: only the random cells are chosen among
        for value, miou in pool:
            cells.append({"arm": "C", "seed": seed, "test_miou": miou})
            values.append(value)
    entries = by_name(quality.shortlist(cells, {"score": values}, boot=2000))
    top, median = [0.68, 0.62, 0.64, 0.67], [0.64, 0.62, 0.62, 0.63]  # seed 2's tie counts as the mean pick
    versus_median, versus_a = entries["top C by score - median C"], entries["top C by score - A"]
    assert versus_median["difference"] == pytest.approx(np.mean(np.subtract(top, median)))
    assert versus_a["difference"] == pytest.approx(np.mean(np.subtract(top, [0.70, 0.66, 0.69, 0.71])))
    assert versus_a["verdict"] == "beyond noise (below 0)" and (versus_a["seeds"], versus_a["cells"]) == (4, 12)
    assert versus_median["ci95"][0] <= versus_median["difference"] <= versus_median["ci95"][1]
    # a cell the estimate could not score (NaN) is left out of its seed's pool, not ranked first or last
    values[1] = float("nan")  # seed 0's top cell
    unscored = by_name(quality.shortlist(cells, {"score": values}, boot=100))["top C by score - median C"]
    assert unscored["difference"] == pytest.approx(np.mean(np.subtract([0.64] + top[1:], [0.62] + median[1:])))
    # an estimate with fewer than three seeds of at least two scored cells says nothing rather than a guess
    assert quality.shortlist(cells[:8], {"score": values[:8]}, boot=100) == []


def test_the_plan_pairs_every_arm_by_seed(quality, tmp_path):
    args = argparse.Namespace(
        out=str(tmp_path),
        preset="quick",
        set=[],
        seeds=5,
        random_cells=8,
        arms=list(quality.BASE_ARMS),
        variants=["loss-dice", "perturbation"],
    )
    plan = quality.Plan(args, str(tmp_path / "data.h5"))
    cells = [plan.runs[f"C/cell-{k}"] for k in range(8)]
    assert [c.seed for c in cells] == [0, 1, 2, 3, 4, 0, 1, 2]  # trained like A's seeds
    assert [c.cell for c in cells] == list(range(8))  # drawn by their own seeds
    argv = cells[6].args()
    assert argv[argv.index("--seed") + 1] == "6" and "seed=1" in argv
    assert plan.runs["B-matched/seed-3"].after == ["A/seed-3/train"]  # sized to its own seed's network
    dice = plan.runs["D-loss-dice/seed-2/train"]  # A's genotype of the same seed, retrained with another loss
    argv = dice.args()
    assert dice.after == ["A/seed-2/search"] and "train.loss=dice" in argv and "seed=2" in argv
    assert argv[argv.index("--genotype") + 1] == str(tmp_path / "A/seed-2/search/genotype.json")
    selected = plan.runs["D-perturbation/seed-4/search"]  # A's search of the same seed, resumed to select
    assert selected.after == ["A/seed-4/search"] and "search.decode.method=perturbation" in selected.args()
    assert plan.runs["D-perturbation/seed-4/train"].after == ["D-perturbation/seed-4/search"]


def test_a_selection_variant_resumes_a_copy_of_the_finished_search(quality, tmp_path):
    source = tmp_path / "A/seed-0/search"
    (source / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "genotype.json", "heartbeat.json", ".lock", "checkpoints/latest.pt"):
        (source / name).write_text(name)
    target = tmp_path / "D-perturbation/seed-0/search"
    target.parent.mkdir(parents=True)
    quality.copy_finished_search(source, target)
    copied = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    assert copied == ["checkpoints", "checkpoints/latest.pt", "config.yaml"]  # not done, not locked, resumable
    assert not any(p.name.startswith(".") for p in target.parent.iterdir())  # no half copy left beside it


def test_a_second_launch_on_the_same_folder_is_refused_and_changes_nothing(tmp_path):
    (tmp_path / "walls.json").write_text('{"A/seed-0/search": 1.0}\n')
    with open(tmp_path / "benchmark.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.run(
            [sys.executable, "benchmarks/quality.py", "--data", str(tmp_path / "none.h5"), "--out", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 2 and "another launch of this benchmark is running" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark.lock", "walls.json"]
    assert (tmp_path / "walls.json").read_text() == '{"A/seed-0/search": 1.0}\n'


def test_a_palette_and_class_names_together_are_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--data", str(tmp_path), "--out", str(tmp_path / "q"),
         "--palette", "p.yaml", "--classes", "background,vehicle"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "not both" in proc.stderr and not (tmp_path / "q").exists()
