"""benchmarks/gpu_check.py runs on a CPU too (tiny sizes): every item measures and lands in the JSON and the table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpcnas.space.genotype import TOPOLOGIES
from tests.conftest import ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_every_item_on_a_cpu_and_writes_json_and_a_table(tmp_path):
    items = "step,memory,latency,predict,compile,graphs"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--small", "--items", items,
         "--out", str(tmp_path), "--cap-scale", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip  # the caps are for a hung GPU item: on 2 loaded cores the CPU compile alone takes 2-3 minutes
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    for name in items.split(","):
        item = results["items"][name]
        assert item["status"] == "done", (name, item["stderr"])
        assert f"] {name}: done" in proc.stdout  # a line per item as it finishes
    step = {r["format"]: r for r in results["items"]["step"]["rows"]}
    assert set(step) == {"fp32", "bf16"} and step["fp32"]["ratio_to_fp32"] == 1.0
    assert all(r["images_per_s"] > 0 for r in step.values())
    memory = results["items"]["memory"]["rows"]
    assert {r["topology"] for r in memory} == set(TOPOLOGIES)  # every registered space, the ResNet-UNet's too
    assert all(r["estimate_mb"] > r["parameters_mb"] > 0 for r in memory)
    latency = results["items"]["latency"]["rows"]
    assert latency[-1]["summary"] and -1 <= latency[-1]["tau_table"] <= 1
    assert all(r["table_ms"] > 0 and r["latency_ms_1"] > 0 for r in latency[:-1])
    predict = {r["phase"]: r for r in results["items"]["predict"]["rows"]}
    phases = ("read windows only", "network only", "predict", "predict --vector")
    assert all(predict[p]["megapixels_per_s"] > 0 for p in phases)
    compiled = [r for r in results["items"]["compile"]["rows"] if "ratio_to_eager" in r]
    assert compiled and compiled[0]["images_per_s"] > 0
    assert results["items"]["graphs"]["rows"] == [{"skipped": "CUDA graphs need a GPU"}]
    table = (tmp_path / "gpu-check.md").read_text()
    assert all(f"| {name} | done |" in table for name in items.split(","))
