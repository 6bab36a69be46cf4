"""Orchestrator efficiency: worker utilization and dispatch overhead, asynchronous vs generational.

Runs the real MPI orchestrator (mpirun, child workers) with the ``sleep``
evaluator: each task sleeps a log-normal time, so no CPU is needed and the
ranks can be oversubscribed.  From each history:

* utilization (DeepHyper's definition): busy workers integrated over time,
  divided by workers x wall time; over the whole run and over the steady
  state (first start to last dispatch, without the final drain);
* dispatch overhead per task: start (in the child) minus submit (on rank 0);
* round-trip idle per task: a worker's next start minus its last end (rank 0
  taking the result, asking the strategy, recording both, sending the next).

``--simulate`` runs no MPI: it measures rank 0's own cost per task on this
disk (the real strategy and ``SearchLog``, and one fsync) and feeds it to a
discrete-event model (``_simulate.py``) of 256, 1,404 and 4,096 ranks with 1-
and 10-minute tasks, asynchronous and generational, fsync per record against
group commit.

Targets: asynchronous >= 98 % utilization, <= 5 ms overhead per task, also
with the multi-objective strategy (``--strategies evolution,nsga2``: NSGA-II
over mIoU and a parameter stand-in), whose sorting runs on rank 0 between
dispatches.

    python benchmarks/orchestrator.py [--ranks 4,8,16] [--median 2.0] [--tasks-per-rank 10]
        [--strategies evolution,nsga2] [--json out.json] [--plot out.png]
    python benchmarks/orchestrator.py --asha 1:3 --epochs 9 --modes async [--json out.json]
    python benchmarks/orchestrator.py --simulate [--json out.json]

``--anchor deephyper`` runs the same tasks (the same seeded log-normal times, the
same number of workers, asynchronously) through DeepHyper's ``MPICommEvaluator``
(``_deephyper_anchor.py``; one more rank, since its master does not evaluate)
and prints hpcnas's figures beside DeepHyper's as ratios.  It needs the
``bench`` extra (``pip install -e '.[bench]'``), in this Python or the one
given by ``--anchor-python``.

    python benchmarks/orchestrator.py --anchor deephyper [--ranks 4,8,16] [--json out.json]

``--asha MIN:ETA`` adds successive halving: each task's sleep is spread over
``--epochs`` epochs, it reports at the rungs and waits for rank 0's answer
(that wait counts as idle); the target stays >= 98 % while tasks are stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _emit import emit  # noqa: E402 - benchmarks/_emit.py, beside this script
from _evolve import mpirun_environment, run_evolve  # noqa: E402

from hpcnas.execution.history import utilization as search_utilization  # noqa: E402
from hpcnas.records import Evaluation  # noqa: E402
from hpcnas.rundir import read_jsonl  # noqa: E402


def utilization(history, world: int, until: float = None) -> float:
    """The search's own utilization (a wait for a rung decision is idle) from the first submit to ``until``
    (default: the last end)."""
    t0 = min(r["submit"] for r in history)
    t1 = until if until is not None else max(r["end"] for r in history)
    return search_utilization([Evaluation.from_dict(r) for r in history], world, t0, t1)


def busy_curve(history, t0: float, points: int = 400):
    """(times, busy workers) for plotting."""
    t1 = max(r["end"] for r in history)
    ts = np.linspace(t0, t1, points)
    busy = [sum(1 for r in history if r["start"] <= t < r["end"]) for t in ts]
    return ts - t0, busy


def round_trip_idle(history) -> list:
    """Per task after a rank's first: its start minus the end of the rank's previous task (seconds): what a
    worker waits for rank 0 to take its result and hand it the next task."""
    by_rank = {}
    for r in sorted(history, key=lambda r: r["start"]):
        by_rank.setdefault(r["rank"], []).append(r)
    return [b["start"] - a["end"] for runs in by_rank.values() for a, b in zip(runs, runs[1:])]


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
        "evolve.memory.limit=null",
        "evolve.prescreen.score=null",
    ]
    if args.asha:  # the sleep is spread over the proxy epochs; rungs report and wait for rank 0's answer
        min_resource, eta = args.asha.split(":")
        sets += [
            f"evolve.asha.min_resource={min_resource}",
            f"evolve.asha.reduction_factor={eta}",
            f"evolve.evaluator.proxy_epochs={args.epochs}",
        ]
    else:
        sets.append("evolve.asha.min_resource=null")
    run_evolve(args.mpirun, world, "configs/smoke-evolve.yaml", out, sets)
    history = read_jsonl(out / "history.jsonl")
    last_dispatch = max(d["submit"] for d in read_jsonl(out / "dispatch.jsonl"))
    rungs = sum(len(r.get("rungs", {})) for r in history)
    return {
        "system": "hpcnas",
        "ranks": world,
        "mode": mode,
        "strategy": strategy,
        "asha": args.asha,
        "stopped": sum(r["status"] == "stopped" for r in history),
        "decision_ms_mean": 1000 * sum(r.get("paused", 0.0) for r in history) / rungs if rungs else None,
        **figures(history, world, last_dispatch),
    }


def figures(history, workers: int, last_dispatch: float) -> dict:
    """Utilization (whole run, and steady state up to the last dispatch), dispatch overhead and round-trip idle
    of one run's records (each with submit, start, end and rank)."""
    overhead = np.array([r["start"] - r["submit"] for r in history]) * 1000
    first_per_rank = {}
    for r in sorted(history, key=lambda r: r["submit"]):
        first_per_rank.setdefault(r["rank"], r["id"])
    warm = np.array([(r["start"] - r["submit"]) * 1000 for r in history if r["id"] not in first_per_rank.values()])
    idle = np.array(round_trip_idle(history)) * 1000
    return {
        "workers": workers,
        "tasks": len(history),
        "utilization": utilization(history, workers),
        "utilization_steady": utilization(history, workers, until=last_dispatch),
        "overhead_ms_mean": float(overhead.mean()),
        "overhead_ms_median": float(np.median(overhead)),
        "overhead_ms_warm_mean": float(warm.mean()) if len(warm) else None,
        "round_trip_idle_ms_median": float(np.median(idle)) if len(idle) else None,
        "round_trip_idle_ms_mean": float(idle.mean()) if len(idle) else None,
        "wall_s": max(r["end"] for r in history) - min(r["submit"] for r in history),
        "curve": busy_curve(history, min(r["submit"] for r in history)),
    }


def run_deephyper(workers: int, args, workdir: Path) -> dict:
    """The same tasks (the sleep evaluator's seeded times, ``workers`` x ``--tasks-per-rank`` of them) through
    DeepHyper's MPICommEvaluator: ``workers`` + 1 ranks, as its master does not evaluate."""
    out = workdir / f"deephyper-{workers}.json"
    cmd = [args.mpirun, "-np", str(workers + 1), "--oversubscribe", args.anchor_python,
           str(ROOT / "benchmarks" / "_deephyper_anchor.py"), str(workers * args.tasks_per_rank), str(args.median),
           str(args.sigma), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=mpirun_environment(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the DeepHyper anchor failed:\n{proc.stderr[-2000:]}")
    history = [dict(r, genotype={}, status="ok") for r in json.loads(out.read_text())]
    row = figures(history, workers, max(r["submit"] for r in history))
    return {"system": "deephyper", "ranks": workers + 1, "mode": "async", "strategy": "-", "asha": None,
            "stopped": 0, "decision_ms_mean": None, **row}  # fmt: skip


def check_anchor(python: str) -> None:
    """Exit 2 with one line when DeepHyper cannot be imported by ``python``."""
    probe = subprocess.run([python, "-c", "import deephyper.evaluator, mpi4py"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(
            f"orchestrator.py: error: --anchor deephyper needs DeepHyper and mpi4py in {python} "
            "(pip install -e '.[bench]', or pass --anchor-python)",
            file=sys.stderr,
        )
        sys.exit(2)


def anchor_table(rows) -> None:
    """hpcnas beside DeepHyper at each worker count, as ratios (hpcnas / DeepHyper)."""
    print(f"{'workers':>8}  {'figure':<28}{'hpcnas':>10}{'DeepHyper':>11}{'ratio':>8}")
    for workers in sorted({r["workers"] for r in rows}):
        ours = next(r for r in rows if r["workers"] == workers and r["system"] == "hpcnas")
        theirs = next(r for r in rows if r["workers"] == workers and r["system"] == "deephyper")
        for key, label, scale in (
            ("utilization_steady", "steady utilization %", 100),
            ("overhead_ms_median", "dispatch overhead ms (med)", 1),
            ("round_trip_idle_ms_median", "round-trip idle ms (med)", 1),
        ):
            a, b = scale * ours[key], scale * theirs[key]
            print(f"{workers:>8}  {label:<28}{a:>10.2f}{b:>11.2f}{a / b:>8.2f}")


def simulated(args) -> int:
    """The discrete-event model (benchmarks/_simulate.py) fed with rank 0's cost measured on this disk."""
    from _simulate import measure_rank0_cost, simulate

    measured = measure_rank0_cost()
    costs, fsync = measured["costs_s"], measured["fsync_s"]
    cost = float(np.mean(costs))
    percentiles = {f"p{q}": 1000 * float(np.percentile(costs, q)) for q in (50, 90, 99)}
    print(
        f"rank 0 per task without fsync {1000 * cost:.3f} ms (median {percentiles['p50']:.3f}, p99 "
        f"{percentiles['p99']:.3f}; {measured['bytes_written']:,} bytes written in the timed passes); one fsync "
        f"{1000 * fsync:.3f} ms",
        file=sys.stderr,
    )
    rows = []
    fsyncs = [("measured", fsync)] + [(f"{ms:g} ms", ms / 1000) for ms in args.fsync_ms]
    for workers in (256, 1404, 4096):
        for minutes in (1, 10):
            for label, fsync_s in fsyncs:
                for commit in ("every record", "group"):
                    r = simulate(
                        workers, 60.0 * minutes, args.sigma, args.tasks_per_rank, costs, fsync_s,
                        group_commit_s=0.05 if commit == "group" else 0.0,
                    )  # fmt: skip
                    rows.append({"ranks": workers, "task_minutes": minutes, "mode": "async", "fsync_ms": 1000 * fsync_s,
                                 "fsync_of": label, "commit": commit, **r})  # fmt: skip
            r = simulate(
                workers, 60.0 * minutes, args.sigma, args.tasks_per_rank, costs, fsync, 0.05, generational=True
            )
            rows.append({"ranks": workers, "task_minutes": minutes, "mode": "generational", "fsync_ms": 1000 * fsync,
                         "fsync_of": "measured", "commit": "group", **r})  # fmt: skip
    print(f"{'ranks':>6}{'task':>6} {'mode':<13}{'fsync':>9} {'commit':<13}{'util %':>8}{'steady %':>10}"
          f"{'wait ms':>11}{'rank 0 %':>10}")  # fmt: skip
    for r in rows:
        print(
            f"{r['ranks']:>6}{r['task_minutes']:>5}m {r['mode']:<13}{r['fsync_ms']:>7.2f}ms {r['commit']:<13}"
            f"{100 * r['utilization']:>8.1f}{100 * r['utilization_steady']:>10.2f}{r['wait_ms_mean']:>11.1f}"
            f"{100 * r['rank0_busy']:>10.1f}"
        )
    emit(
        {
            "benchmark": "orchestrator-simulated",
            "sigma": args.sigma,
            "tasks_per_rank": args.tasks_per_rank,
            "rank0_cost_ms": 1000 * cost,
            "rank0_cost_ms_percentiles": percentiles,
            "rank0_bytes_written": measured["bytes_written"],
            "fsync_ms_measured": 1000 * fsync,
            "commit_every_s": 0.05,
            "rows": rows,
        },
        args.json,
    )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="4,8,16")
    p.add_argument("--modes", default="async,generational")
    p.add_argument("--strategies", default="evolution", help="comma-separated: evolution, nsga2, random")
    p.add_argument("--median", type=float, default=2.0, help="median task seconds")
    p.add_argument("--sigma", type=float, default=0.5, help="log-normal shape")
    p.add_argument("--tasks-per-rank", type=int, default=10)
    p.add_argument("--asha", help="MIN:ETA: successive halving with rungs at MIN, MIN*ETA, ... of --epochs epochs")
    p.add_argument("--epochs", type=int, default=9, help="with --asha: proxy epochs the sleep is spread over")
    p.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="no mpirun: measure rank 0's cost per task here, then model 256 / 1,404 / 4,096 ranks",
    )
    p.add_argument(
        "--fsync-ms",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[4.0, 20.0],
        help="--simulate: fsync times to model besides the one measured here (parallel file systems are slower)",
    )
    p.add_argument(
        "--anchor",
        choices=["deephyper"],
        help="also run the same tasks through DeepHyper's MPICommEvaluator (asynchronous mode only)",
    )
    p.add_argument(
        "--anchor-python",
        default=sys.executable,
        help="--anchor: the Python that has DeepHyper (default: this one; pip install -e '.[bench]')",
    )
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--plot", help="write the busy-workers plot here (PNG)")
    args = p.parse_args(argv)
    if args.simulate:
        return simulated(args)
    if args.anchor:
        check_anchor(args.anchor_python)
        args.modes = "async"  # DeepHyper's evaluator is driven asynchronously; generational has no counterpart
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
            if args.anchor:
                rows.append(run_deephyper(world, args, Path(tmp)))
                r = rows[-1]
                print(
                    f"  deephyper {world:>3} workers: utilization {100 * r['utilization']:.1f}% "
                    f"(steady {100 * r['utilization_steady']:.1f}%), overhead {r['overhead_ms_median']:.2f} ms",
                    file=sys.stderr,
                )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        worlds = sorted({r["workers"] for r in rows})
        fig, axes = plt.subplots(1, len(worlds), figsize=(5 * len(worlds), 3.6), squeeze=False)
        for ax, world in zip(axes[0], worlds):
            for r in rows:
                if r["workers"] == world:
                    ts, busy = r["curve"]
                    label = f"{r['system']} {r['mode']} {r['strategy']} ({100 * r['utilization']:.0f}%)"
                    ax.step(ts, busy, where="post", label=label)
            ax.set(title=f"{world} workers", xlabel="seconds", ylabel="busy workers", ylim=(0, world + 0.5))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    print(
        f"{'system':<10}{'mode':<14}{'strategy':<11}{'ranks':>6}{'tasks':>7}{'util %':>9}{'steady %':>10}"
        f"{'ovh ms med':>12}{'ovh ms mean':>13}{'warm mean':>11}{'idle ms med':>13}{'wall s':>8}{'stopped':>9}"
        f"{'decide ms':>10}"
    )
    for r in rows:
        warm = f"{r['overhead_ms_warm_mean']:.2f}" if r["overhead_ms_warm_mean"] is not None else "-"
        print(
            f"{r['system']:<10}{r['mode']:<14}{r['strategy']:<11}{r['ranks']:>6}{r['tasks']:>7}"
            f"{100 * r['utilization']:>9.1f}{100 * r['utilization_steady']:>10.1f}{r['overhead_ms_median']:>12.2f}"
            f"{r['overhead_ms_mean']:>13.2f}{warm:>11}{r['round_trip_idle_ms_median'] or 0:>13.2f}"
            f"{r['wall_s']:>8.1f}{r['stopped']:>9}"
            f"{r['decision_ms_mean'] or 0:>10.2f}"
        )
    if args.anchor:
        anchor_table(rows)
    for r in rows:
        r.pop("curve")
    emit(
        {
            "benchmark": "orchestrator",
            "anchor": args.anchor,
            "median_s": args.median,
            "sigma": args.sigma,
            "rows": rows,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
