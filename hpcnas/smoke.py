"""``hpcnas smoke``: the whole pipeline end to end on the embedded synthetic data, in about a minute.

Data, search, decode, retrain, baseline, evaluate, report: a composition of the commands of
:mod:`hpcnas.pipeline` and of :func:`hpcnas.report.build.report`, which is why it sits above both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

from hpcnas.config import load_config
from hpcnas.pipeline import SMOKE_CONFIG, search, train
from hpcnas.report.build import report
from hpcnas.run import RunScope, holds_run_dirs
from hpcnas.rundir import SUMMARY, RunDir


@holds_run_dirs
def smoke(
    out: Optional[str] = None, config_path: Optional[str] = None, overrides: Sequence[str] = (), *, runs: RunScope
) -> Path:
    """``hpcnas smoke``: data -> search -> decode -> retrain -> evaluate -> report, on synthetic data."""
    t0 = time.time()
    config = config_path or str(SMOKE_CONFIG)
    cfg = load_config(config, overrides)  # a bad --set stops here, before anything is written
    root = runs.make_run_dir(out, "smoke")
    data = RunDir(root).data
    if not data.exists():
        from hpcnas.data.synth import synthesize

        s = cfg.data.synth
        synthesize(data, n=s.n, size=s.size, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction)
    with_data = list(overrides) + [f"data.path={data}"]
    genotype, search_dir = search(config, with_data, out=str(root / "search"))
    print(f"[smoke] search: {genotype.describe()} ({time.time() - t0:.0f}s)")
    _, train_dir = train(
        config, with_data, genotype=str(RunDir(search_dir).genotype), out=str(root / "train"), evaluate_split="test"
    )
    result = json.loads(RunDir(train_dir).evaluation.read_text())
    _, base_dir = train(
        config, with_data, baseline="resnet_unet", out=str(root / "baseline_resnet_unet"), evaluate_split="test"
    )
    report_dir = report([str(train_dir), str(base_dir), str(search_dir)])
    curve = result["objects"]
    print(f"[smoke] done in {time.time() - t0:.0f}s: {root}")
    print(
        f"[smoke] test mIoU {result['miou']:.4f}, object recall@0.5 {curve['recall'][4]:.3f}, "
        f"precision@0.5 {curve['precision'][4]:.3f}"
    )
    print(f"[smoke] report: {report_dir / SUMMARY}")
    return root
