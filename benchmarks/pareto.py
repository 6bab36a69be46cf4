"""Multi-objective search quality: NSGA-II against random search at the same evaluation budget.

Each arm runs the real discrete search (mpirun, worker children, proxy
training of every architecture) on configs/smoke-pareto.yaml's objectives,
mIoU against parameters, for several seeds.  The measure is the hypervolume
of each run's Pareto front, every objective scaled to [0, 1] by the lowest
and highest values seen over *all* runs (so the arms are compared on one
scale), against the reference point 1.1: after the whole budget, and after
every evaluation (the curve).

    python benchmarks/pareto.py [--seeds 0,1,2] [--budget 24] [--ranks 4] [--out benchmarks/results/pareto-quick]

Writes OUT.json (every run's hypervolume curve), OUT.md (the table) and
OUT.png (mean hypervolume against evaluations, per arm).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _emit import emit  # noqa: E402 - benchmarks/_emit.py, beside this script
from _evolve import run_evolve  # noqa: E402

from hpcnas.execution.history import FinishedSearch, read_search  # noqa: E402
from hpcnas.strategies.objectives import hypervolume, pareto_front  # noqa: E402

ARMS = {"nsga2": ["evolve.strategy.name=nsga2"], "random": ["evolve.strategy.name=random"]}


def run_search(arm: str, seed: int, args, workdir: Path) -> FinishedSearch:
    """One discrete search of ``arm`` with ``seed``; its records."""
    out = workdir / f"{arm}-{seed}"
    sets = ARMS[arm] + [
        f"seed={seed}",
        f"evolve.max_evaluations={args.budget}",
        f"evolve.strategy.population={args.population}",
    ]
    run_evolve(args.mpirun, args.ranks, "configs/smoke-pareto.yaml", out, sets)
    search = read_search(out)
    assert search is not None
    return search


def curve(search: FinishedSearch, lows, highs) -> List[float]:
    """The hypervolume after each evaluation, in the order they finished."""
    done = sorted(search.evaluations, key=lambda e: e.end or 0.0)
    return [
        hypervolume(search.objectives, pareto_front(search.objectives, done[:k]), lows, highs)
        for k in range(1, len(done) + 1)
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=24, help="evaluations per run")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pareto-quick"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: Dict[str, List[FinishedSearch]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for arm in ARMS:
                runs[arm].append(run_search(arm, seed, args, Path(tmp)))
                print(f"  {arm} seed {seed}: {len(runs[arm][-1].evaluations)} evaluations", file=sys.stderr)
    objectives = runs["nsga2"][0].objectives
    everything = [e for arm in runs.values() for s in arm for e in s.evaluations if e.ok]
    minimized = np.array([[o.minimized(e) for o in objectives] for e in everything])
    lows, highs = minimized.min(axis=0).tolist(), minimized.max(axis=0).tolist()
    rows, curves = [], {}
    for arm, searches in runs.items():
        curves[arm] = [curve(s, lows, highs) for s in searches]
        finals = [c[-1] for c in curves[arm]]
        fronts = [len(s.front) for s in searches]
        best = [max(e.fitness for e in s.evaluations if e.ok) for s in searches]
        rows.append(
            {
                "arm": arm,
                "hypervolume_mean": float(np.mean(finals)),
                "hypervolume_std": float(np.std(finals)),
                "hypervolumes": finals,
                "front_sizes": fronts,
                "best_miou_mean": float(np.mean(best)),
            }
        )
    table = [
        "| arm | hypervolume (mean ± std over seeds) | per seed | front size | best mIoU (mean) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['arm']} | {r['hypervolume_mean']:.4f} ± {r['hypervolume_std']:.4f} | "
            + ", ".join(f"{v:.4f}" for v in r["hypervolumes"])
            + f" | {', '.join(map(str, r['front_sizes']))} | {r['best_miou_mean']:.4f} |"
        )
    print("\n".join(table))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(["benchmarks/pareto.py", *(argv if argv is not None else sys.argv[1:])])
    header = [
        f"# Multi-objective search: {', '.join(map(str, objectives))}",
        "",
        f"`{command}`: {len(seeds)} seeds, {args.budget} evaluations per run on {args.ranks} ranks, "
        "configs/smoke-pareto.yaml (proxy training on CPU). Hypervolume on one scale for all runs "
        "(objectives scaled to [0, 1] over every run, reference point 1.1; at most 1.21).",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(header + table) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for k, (arm, cs) in enumerate(curves.items()):
        n = min(len(c) for c in cs)
        mean = np.mean([c[:n] for c in cs], axis=0)
        ax.plot(range(1, n + 1), mean, color=f"C{k}", label=f"{arm} (mean of {len(cs)} seeds)")
        for c in cs:
            ax.plot(range(1, len(c) + 1), c, color=f"C{k}", alpha=0.25, lw=0.8)
    ax.set(xlabel="evaluations finished", ylabel="hypervolume", title="mIoU vs parameters: hypervolume of the front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    emit(
        {
            "benchmark": "pareto",
            "objectives": [str(o) for o in objectives],
            "seeds": seeds,
            "budget": args.budget,
            "ranks": args.ranks,
            "scale": {"lows": lows, "highs": highs},
            "rows": rows,
            "curves": curves,
        },
        str(out.with_suffix(".json")),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
