"""Orchestrator efficiency: worker utilization and dispatch overhead, asynchronous vs generational.

Runs the real MPI orchestrator (mpirun, child workers) with the ``sleep``
evaluator: each task sleeps a log-normal time, so no CPU is needed and the
ranks can be oversubscribed.  From each history:

* utilization (DeepHyper's definition): busy workers integrated over time,
  divided by workers x wall time; over the whole run and over the steady
  state (first start to last dispatch, without the final drain);
* dispatch overhead per task: start (in the child) minus submit (on rank 0).

Targets: asynchronous >= 98 % utilization, <= 5 ms overhead per task, also
with the multi-objective strategy (``--strategies evolution,nsga2``: NSGA-II
over mIoU and a parameter stand-in), whose sorting runs on rank 0 between
dispatches.

    python benchmarks/orchestrator.py [--ranks 4,8,16] [--median 2.0] [--tasks-per-rank 4]
        [--strategies evolution,nsga2] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _emit import emit  # noqa: E402 - benchmarks/_emit.py, beside this script
from _evolve import run_evolve  # noqa: E402

from hpcnas.rundir import read_jsonl  # noqa: E402


def utilization(history, world: int, until: float = None) -> float:
    """Busy worker-seconds over world x span, the span from the first submit to ``until`` (default: last end)."""
    t0 = min(r["submit"] for r in history)
    t1 = until if until is not None else max(r["end"] for r in history)
    busy = sum(max(0.0, min(r["end"], t1) - max(r["start"], t0)) for r in history)
    return busy / (world * (t1 - t0))


def busy_curve(history, t0: float, points: int = 400):
    """(times, busy workers) for plotting."""
    t1 = max(r["end"] for r in history)
    ts = np.linspace(t0, t1, points)
    busy = [sum(1 for r in history if r["start"] <= t < r["end"]) for t in ts]
    return ts - t0, busy


def run_one(world: int, mode: str, strategy: str, args, workdir: Path) -> dict:
    """One orchestrated search; its figures."""
    out = workdir / f"{mode}-{strategy}-{world}"
    sets = [
        "evolve.evaluator.name=sleep",
        f"evolve.evaluator.sleep_median={args.median}",
        f"evolve.evaluator.sleep_sigma={args.sigma}",
        f"evolve.strategy.mode={mode}",
        f"evolve.strategy.name={strategy}",
        "evolve.objectives=[miou, params]" if strategy == "nsga2" else "evolve.objectives=[miou]",
        f"evolve.max_evaluations={world * args.tasks_per_rank}",
        "evolve.strategy.population=8",
        "evolve.strategy.sample_size=3",
        "data.synth.n=4",
    ]
    run_evolve(args.mpirun, world, "configs/smoke-evolve.yaml", out, sets)
    history = read_jsonl(out / "history.jsonl")
    dispatch = read_jsonl(out / "dispatch.jsonl")
    overhead = np.array([r["start"] - r["submit"] for r in history]) * 1000
    first_per_rank = {}
    for r in sorted(history, key=lambda r: r["submit"]):
        first_per_rank.setdefault(r["rank"], r["id"])
    warm = np.array([(r["start"] - r["submit"]) * 1000 for r in history if r["id"] not in first_per_rank.values()])
    last_dispatch = max(d["submit"] for d in dispatch)
    return {
        "ranks": world,
        "mode": mode,
        "strategy": strategy,
        "tasks": len(history),
        "utilization": utilization(history, world),
        "utilization_steady": utilization(history, world, until=last_dispatch),
        "overhead_ms_mean": float(overhead.mean()),
        "overhead_ms_median": float(np.median(overhead)),
        "overhead_ms_warm_mean": float(warm.mean()) if len(warm) else None,
        "wall_s": max(r["end"] for r in history) - min(r["submit"] for r in history),
        "curve": busy_curve(history, min(r["submit"] for r in history)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="4,8,16")
    p.add_argument("--modes", default="async,generational")
    p.add_argument("--strategies", default="evolution", help="comma-separated: evolution, nsga2, random")
    p.add_argument("--median", type=float, default=2.0, help="median task seconds")
    p.add_argument("--sigma", type=float, default=0.5, help="log-normal shape")
    p.add_argument("--tasks-per-rank", type=int, default=4)
    p.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--plot", help="write the busy-workers plot here (PNG)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in [int(x) for x in args.ranks.split(",")]:
            for mode in args.modes.split(","):
                for strategy in args.strategies.split(","):
                    rows.append(run_one(world, mode, strategy, args, Path(tmp)))
                    r = rows[-1]
                    print(
                        f"  {mode:<13} {strategy:<10} {world:>3} ranks: utilization {100 * r['utilization']:.1f}% "
                        f"(steady {100 * r['utilization_steady']:.1f}%), overhead {r['overhead_ms_median']:.2f} ms",
                        file=sys.stderr,
                    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        worlds = sorted({r["ranks"] for r in rows})
        fig, axes = plt.subplots(1, len(worlds), figsize=(5 * len(worlds), 3.6), squeeze=False)
        for ax, world in zip(axes[0], worlds):
            for r in rows:
                if r["ranks"] == world:
                    ts, busy = r["curve"]
                    label = f"{r['mode']} {r['strategy']} ({100 * r['utilization']:.0f}%)"
                    ax.step(ts, busy, where="post", label=label)
            ax.set(title=f"{world} ranks", xlabel="seconds", ylabel="busy workers", ylim=(0, world + 0.5))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    print(
        f"{'mode':<14}{'strategy':<11}{'ranks':>6}{'tasks':>7}{'util %':>9}{'steady %':>10}"
        f"{'ovh ms med':>12}{'ovh ms mean':>13}{'warm mean':>11}{'wall s':>8}"
    )
    for r in rows:
        warm = f"{r['overhead_ms_warm_mean']:.2f}" if r["overhead_ms_warm_mean"] is not None else "-"
        print(
            f"{r['mode']:<14}{r['strategy']:<11}{r['ranks']:>6}{r['tasks']:>7}{100 * r['utilization']:>9.1f}"
            f"{100 * r['utilization_steady']:>10.1f}{r['overhead_ms_median']:>12.2f}{r['overhead_ms_mean']:>13.2f}"
            f"{warm:>11}{r['wall_s']:>8.1f}"
        )
    for r in rows:
        r.pop("curve")
    emit({"benchmark": "orchestrator", "median_s": args.median, "sigma": args.sigma, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
