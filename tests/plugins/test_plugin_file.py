"""A plugin is one file: the README's example, installed as a package's entry point, drives real runs.

The plugin lives outside hpcnas (a temporary site directory with its own ``.dist-info``, the layout pip
installs), and reaches the orchestrator, the evaluation children and the search loop through the
``hpcnas.plugins`` entry point group alone: nothing under ``hpcnas/`` names it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpcnas.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hpcnas"


# the plain orchestrator: no memory estimate, pre-screen or successive halving
PLAIN = ("evolve.memory.limit=null", "evolve.prescreen.score=null", "evolve.asha.min_resource=null")


def readme_plugin() -> str:
    """The code block that follows ``<!-- plugin-example -->`` in the README."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- plugin-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README's 'Extending hpcnas' section lost its plugin example"
    return match.group(1)


def install(site: Path, module: str, code: str) -> None:
    """``module`` as an installed distribution whose ``hpcnas.plugins`` entry point names it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[hpcnas.plugins]\ntoy = {module}\n")


def hpcnas(site: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-m", "hpcnas.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def sets(*items: str) -> list:
    return [arg for item in items for arg in ("--set", item)]


def test_nothing_in_the_package_names_the_example_plugin():
    names = ("hill_climber", "HillClimber", "toy_hpcnas_plugin", "sparsity", "chain_unet", "ChainCell", "weight_norm")
    names += ("conv_1x1", "O_chain")
    hits = [str(p) for p in PACKAGE.rglob("*") if p.is_file() and any(n in p.read_text(errors="ignore") for n in names)]
    assert hits == []


@pytest.mark.slow
def test_the_readme_plugin_drives_an_evolve_and_a_search_from_yaml(tmp_path):
    site = tmp_path / "site"
    install(site, "toy_hpcnas_plugin", readme_plugin())
    config = tmp_path / "toy.yaml"
    config.write_text(
        (ROOT / "configs" / "smoke-evolve.yaml")
        .read_text()
        .replace(
            "name: evolution\n    mode: async\n    population: 4\n    sample_size: 2",
            "name: hill_climber\n    steps: 2",
        )
        + "search:\n  arch_optimizer: sgd\n  epochs: 3\n  arch_start_epoch: 2\n"
    )

    evolve = hpcnas(
        site,
        "evolve",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "evolve"),
        *sets(*PLAIN, "evolve.evaluator.name=sleep", "evolve.evaluator.sleep_median=0.05", "evolve.max_evaluations=5"),
    )
    assert evolve.returncode == 0, evolve.stderr[-2000:]
    assert "warning" not in evolve.stderr  # every setting in the YAML is the hill climber's own
    refused = hpcnas(
        site, "evolve", "--config", str(config), "--out", str(tmp_path / "no"), *sets("evolve.strategy.steps=0")
    )
    assert refused.returncode == 2 and not (tmp_path / "no").exists()
    assert (
        refused.stderr.strip().splitlines()[-1]
        == "hpcnas: error: --set: key 'evolve.strategy.steps': must be >= 1, got 0"
    )
    history = sorted(read_jsonl(tmp_path / "evolve" / "history.jsonl"), key=lambda r: r["id"])
    # the hill climber's signature: one random start, then each a mutation of the best so far
    assert [r["parent"] is None for r in history] == [True, False, False, False, False]
    for r in history[1:]:
        best_before = max((e for e in history if e["id"] < r["id"]), key=lambda e: e["fitness"])
        assert r["parent"] == best_before["id"]

    # the objective, measured after real proxy trainings, with its own setting from YAML
    trained = hpcnas(
        site,
        "evolve",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "trained"),
        *sets(*PLAIN, "evolve.max_evaluations=2", "evolve.evaluator.proxy_epochs=1", "evolve.evaluator.latency_runs=0"),
        *sets(
            "evolve.objectives=[miou, sparsity]",
            "evolve.measure.sparsity.threshold=0.0",
            "evolve.evaluator.zero_cost=true",
        ),
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    records = read_jsonl(tmp_path / "trained" / "history.jsonl")
    assert len(records) == 2 and all(r["objectives"]["sparsity"] == 0.0 for r in records)  # no |w| < 0
    assert all(r["scores"]["weight_norm"] > 0 and "naswot" in r["scores"] for r in records)  # plugin and built-in

    # the plugin cell kind, searched by the plugin optimizer, then retrained and exported like any network
    chain = ("space.topology=chain_unet",)
    search = hpcnas(site, "search", "--config", str(config), "--out", str(tmp_path / "search"), *sets(*chain))
    assert search.returncode == 0, search.stderr[-2000:]
    epochs = read_jsonl(tmp_path / "search" / "metrics.jsonl")
    assert {e["arch_lr"] for e in epochs} == {0.0125}  # the plugin optimizer's own default step
    genotype = json.loads((tmp_path / "search" / "genotype.json").read_text())
    assert genotype["topology"] == "chain_unet" and genotype["op_set"] == "O_chain"
    arch = json.loads((tmp_path / "search" / "arch.json").read_text())
    assert all(len(row) == 12 for rows in arch["ops"].values() for row in rows)  # O_large's 11 ops and the plugin's
    assert all(len(node) == 1 and node[0][1] == j for cell in genotype["cells"].values() for j, node in enumerate(cell))
    train = hpcnas(
        site,
        "train",
        "--config",
        str(config),
        "--genotype",
        str(tmp_path / "search" / "genotype.json"),
        "--out",
        str(tmp_path / "train"),
        *sets(*chain, "train.epochs=1", "train.select_from_epoch=0"),
    )
    assert train.returncode == 0, train.stderr[-2000:]
    export = hpcnas(
        site,
        "export",
        "--checkpoint",
        str(tmp_path / "train" / "checkpoints" / "best.pt"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "chain.onnx"),
    )
    assert export.returncode == 0 and "parity ok" in export.stdout + export.stderr, export.stderr[-2000:]

    without = hpcnas(tmp_path / "empty", "search", "--config", str(config), "--out", str(tmp_path / "refused"))
    assert without.returncode == 2
    assert without.stderr.strip().splitlines() == [
        f"hpcnas: error: {config}: key 'search.arch_optimizer': unknown architecture optimizer 'sgd' "
        "(known: gaea, adam)"
    ]
    assert not (tmp_path / "refused").exists()

    misspelt = hpcnas(
        site,
        "evolve",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "misspelt"),
        *sets("evolve.measure.sparsity.treshold=0.1"),
    )
    assert misspelt.returncode == 2
    assert misspelt.stderr.strip().splitlines()[-1] == (
        "hpcnas: error: --set: key 'evolve.measure.sparsity.treshold': unknown key (did you mean 'threshold'?)"
    )
    assert not (tmp_path / "misspelt").exists()


def test_a_plugin_that_fails_to_import_is_one_error_line(tmp_path):
    site = tmp_path / "site"
    install(site, "broken_plugin", "import a_module_that_is_not_there\n")
    proc = hpcnas(site, "search", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "hpcnas: error: plugin 'toy' (broken_plugin) failed to load: "
        "ModuleNotFoundError: No module named 'a_module_that_is_not_there'"
    ]
    assert not (tmp_path / "r").exists()
