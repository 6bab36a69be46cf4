"""Spending GPU time well: do zero-cost scores rank architectures, and do the pre-screen and successive halving
find better ones for the same budget?

``--tau``: one random search whose children also score every architecture at initialization
(``evolve.evaluator.zero_cost``), each then proxy-trained; Kendall tau between every score and the proxy
fitness, with a bootstrap 95 % interval.

``--compare``: regularized evolution as configured, against the same with the zero-cost pre-screen and with
successive halving, over seeds, each with the same budget (``evolve.max_evaluations``, which successive
halving counts in epochs); the best fitness against the workers' busy seconds (the GPU time a cluster
would bill), and at the end.

    python benchmarks/spending.py --data D.h5 --tau --evaluations 40 --json results/zero-cost-tau.json
    python benchmarks/spending.py --data D.h5 --compare --seeds 0,1,2 --evaluations 16 \\
        --json results/spending-compare.json --plot results/spending-compare.png
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _emit import emit  # noqa: E402 - benchmarks/_emit.py, beside this script
from _evolve import run_evolve  # noqa: E402

from hpcnas.rundir import read_jsonl  # noqa: E402

ARMS = {
    "evolution": [],
    "prescreen": ["evolve.prescreen.score={score}", "evolve.prescreen.sample=8", "evolve.prescreen.keep=1"],
    "asha": ["evolve.asha.min_resource=1", "evolve.asha.reduction_factor=2"],
}


def base_sets(args, seed: int) -> list:
    """The proxy task: smoke-evolve.yaml's space on the given data, every spending feature off."""
    return [
        f"data.path={args.data}",
        f"seed={seed}",
        f"space.channels={args.channels}",
        "space.depth=3",
        "space.nodes=3",
        f"train.batch_size={args.batch}",
        f"train.max_steps_per_epoch={args.steps}",
        f"evolve.evaluator.proxy_epochs={args.epochs}",
        f"evolve.max_evaluations={args.evaluations}",
        "evolve.strategy.population=6",
        "evolve.strategy.sample_size=3",
        "evolve.evaluator.latency_runs=0",
        "evolve.memory.limit=null",
        "evolve.prescreen.score=null",
        "evolve.asha.min_resource=null",
    ]


def kendall_with_interval(xs, ys, resamples: int = 1000, seed: int = 0):
    """Kendall tau of (xs, ys) and its bootstrap 95 % interval."""
    from scipy.stats import kendalltau

    tau = float(kendalltau(xs, ys).statistic)
    rng = random.Random(seed)
    n, taus = len(xs), []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        t = kendalltau([xs[i] for i in idx], [ys[i] for i in idx]).statistic
        if t == t:  # NaN when a resample is constant
            taus.append(float(t))
    taus.sort()
    return tau, taus[int(0.025 * len(taus))], taus[int(0.975 * len(taus)) - 1]


def tau(args, workdir: Path) -> dict:
    out = workdir / "tau"
    sets = base_sets(args, 0) + ["evolve.strategy.name=random", "evolve.evaluator.zero_cost=true"]
    run_evolve(args.mpirun, args.ranks, "configs/smoke-evolve.yaml", out, sets)
    ok = [r for r in read_jsonl(out / "history.jsonl") if r["status"] == "ok" and r["fitness"] is not None]
    fitness = [r["fitness"] for r in ok]
    rows = []
    for name in ("naswot", "synflow", "grad_norm", "params"):
        t, low, high = kendall_with_interval([r["scores"][name] for r in ok], fitness)
        rows.append({"score": name, "tau": t, "low": low, "high": high, "n": len(ok)})
    print(f"{'score':<11}{'tau':>7}{'95% interval':>18}{'n':>5}")
    for r in rows:
        interval = f"[{r['low']:.3f}, {r['high']:.3f}]"
        print(f"{r['score']:<11}{r['tau']:>7.3f}{interval:>18}{r['n']:>5}")
    return {"tau": rows, "fitness": {"min": min(fitness), "median": statistics.median(fitness), "max": max(fitness)}}


def best_over_time(history) -> list:
    """(busy worker-seconds so far, best fitness so far) after each evaluation, in the order they ended."""
    points, busy, best = [], 0.0, None
    for r in sorted(history, key=lambda r: r["end"]):
        busy += (r["end"] - r["start"]) - r.get("paused", 0.0)
        if r["status"] == "ok" and r["fitness"] is not None:
            best = r["fitness"] if best is None else max(best, r["fitness"])
        points.append((busy, best))
    return points


def compare(args, workdir: Path) -> dict:
    rows = []
    for seed in args.seeds:
        for arm, extra in ARMS.items():
            out = workdir / f"{arm}-{seed}"
            sets = base_sets(args, seed) + [s.format(score=args.score) for s in extra]
            run_evolve(args.mpirun, args.ranks, "configs/smoke-evolve.yaml", out, sets)
            history = read_jsonl(out / "history.jsonl")
            curve = best_over_time(history)
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "evaluations": len(history),
                    "stopped": sum(r["status"] == "stopped" for r in history),
                    "busy_s": curve[-1][0],
                    "best": curve[-1][1],
                    "curve": curve,
                }
            )
            print(
                f"  {arm:<10} seed {seed}: best {rows[-1]['best']:.4f}, busy {rows[-1]['busy_s']:.0f} s",
                file=sys.stderr,
            )
    print(f"{'arm':<11}{'best (per seed)':>30}{'mean':>8}{'busy s (mean)':>15}{'evaluations':>13}")
    summary = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        bests = [r["best"] for r in mine]
        summary[arm] = {
            "best_mean": statistics.mean(bests),
            "busy_s_mean": statistics.mean(r["busy_s"] for r in mine),
            "evaluations_mean": statistics.mean(r["evaluations"] for r in mine),
        }
        per_seed = ", ".join(f"{b:.4f}" for b in bests)
        print(
            f"{arm:<11}{per_seed:>30}{summary[arm]['best_mean']:>8.4f}{summary[arm]['busy_s_mean']:>15.0f}"
            f"{summary[arm]['evaluations_mean']:>13.1f}"
        )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        colours = {"evolution": "tab:blue", "prescreen": "tab:green", "asha": "tab:orange"}
        for r in rows:
            xs = [b for b, f in r["curve"] if f is not None]
            ys = [f for b, f in r["curve"] if f is not None]
            ax.step(
                xs,
                ys,
                where="post",
                color=colours[r["arm"]],
                alpha=0.8,
                label=r["arm"] if r["seed"] == args.seeds[0] else None,
            )
        ax.set(xlabel="busy worker-seconds", ylabel="best proxy mIoU so far")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return {"rows": rows, "summary": summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="an HDF5 data set (hpcnas data tile)")
    p.add_argument("--tau", action="store_true")
    p.add_argument("--compare", action="store_true")
    p.add_argument("--evaluations", type=int, default=16)
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0, 1, 2])
    p.add_argument("--score", default="naswot", help="--compare: the pre-screen's score")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=15, help="training steps per proxy epoch")
    p.add_argument("--epochs", type=int, default=4, help="proxy epochs")
    p.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    p.add_argument("--json")
    p.add_argument("--plot")
    args = p.parse_args(argv)
    if not (args.tau or args.compare):
        p.error("say --tau, --compare or both")
    payload = {"benchmark": "spending", "data": args.data}
    with tempfile.TemporaryDirectory() as tmp:
        if args.tau:
            payload.update(tau(args, Path(tmp)))
        if args.compare:
            payload.update(compare(args, Path(tmp)))
    emit(payload, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
