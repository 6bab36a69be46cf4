"""Data-parallel search throughput: images per second on 1 and N ranks, scaling efficiency.

Runs the real ``hpcnas search`` (alone, then under ``mpirun -np N`` with
Horovod) on synthetic data with a fixed per-rank batch (weak scaling), and
reads the training time of each epoch from metrics.jsonl (the first epoch is
warm-up and not counted). Every step consumes two batches per rank: one for
the architecture step, one for the weight step.

    python benchmarks/data_parallel.py [--ranks 1,2] [--device cpu|cuda] [--size 64] [--batch 4]
        [--threads-per-rank 1] [--sync-batchnorm true|false] [--slurm] [--json out.json]

``--slurm`` runs the multi-rank searches as SLURM jobs with one rank per
node (the 1-rank search stays a local process), so on the dev cluster the
ranks are on two emulated nodes and talk TCP, as on a cluster without a
shared-memory path between them.

Every rank gets the same torch threads (``--threads-per-rank``, 1 by default),
so the 1-rank run does not take every core and the ratio measures parallelism.
Each row also gives the blocking collectives per step and the share of the
training time spent waiting in them (the search's own counters).  Open MPI and
Horovod settings in the environment (``OMPI_MCA_mpi_yield_when_idle``,
``HOROVOD_CYCLE_TIME``) are recorded with the results.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _emit import emit, tuning  # noqa: E402 - benchmarks/_emit.py, beside this script
from _evolve import mpirun_environment  # noqa: E402

from hpcnas.rundir import read_jsonl  # noqa: E402


def run_one(ranks: int, args, workdir: Path) -> dict:
    """One search; images per second from its metrics."""
    out = workdir / f"r{ranks}"
    sets = [
        f"data.synth.n={args.patches}",
        f"data.synth.size={args.size}",
        "data.synth.val_fraction=0.1",
        "data.synth.test_fraction=0.0",
        f"search.batch_size={args.batch}",
        f"search.epochs={args.epochs}",
        "search.arch_start_epoch=0",
        f"search.max_steps_per_epoch={args.steps}",
        f"device={args.device}",
        f"space.channels={args.channels}",
        "space.depth=3",
        "space.nodes=4",
        "search.partial_channels=4",
        f"search.sync_batchnorm={args.sync_batchnorm}",
        *getattr(args, "set", []),
    ]
    cmd = [
        sys.executable,
        "-m",
        "hpcnas.cli",
        "search",
        "--config",
        str(ROOT / "configs/smoke.yaml"),
        "--out",
        str(out),
    ]
    for s in sets:
        cmd += ["--set", s]
    env = mpirun_environment()
    if args.threads_per_rank:  # the same on both sides, or the 1-rank run takes every core and the ratio says nothing
        env["OMP_NUM_THREADS"] = str(args.threads_per_rank)
    if ranks > 1 and args.slurm:  # one rank per node; sbatch passes this environment on (--export=ALL)
        env["OMPI_MCA_btl"] = "self,tcp"  # the dev cluster's nodes share one host: make MPI use the network
        cpus = args.threads_per_rank or 1
        cmd = ["sbatch", "--wait", "--quiet", f"--nodes={ranks}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}",
               f"--output={out}.log", f"--wrap=srun {shlex.join(cmd)}"]  # fmt: skip
    elif ranks > 1:
        cmd = [args.mpirun, "-np", str(ranks), "--oversubscribe", "-x", "OMP_NUM_THREADS"] + cmd
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        log = Path(f"{out}.log")
        detail = proc.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
        raise RuntimeError(f"search on {ranks} rank(s) failed:\n{detail}")
    records = read_jsonl(out / "metrics.jsonl")[1:]  # epoch 0 is warm-up
    steps = sum(r["steps"] for r in records)
    seconds = sum(r["train_s"] for r in records)
    collectives = [r.get("collectives_per_step", 0.0) for r in records]
    waiting = sum(r.get("collective_wait_s", 0.0) for r in records)
    images = steps * args.batch * ranks * 2
    return {
        "ranks": ranks,
        "nodes": ranks if ranks > 1 and args.slurm else 1,
        "device": args.device,
        "sync_batchnorm": args.sync_batchnorm == "true",
        "batch_per_rank": args.batch,
        "input": args.size,
        "steps": steps,
        "train_s": seconds,
        "images_per_s": images / seconds,
        "threads_per_rank": args.threads_per_rank or "torch default",
        "collectives_per_step": max(collectives) if collectives else 0.0,
        "collective_s_per_step": waiting / max(steps, 1),
        "collective_share": waiting / seconds,
    }


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """The options of one search run (also read by ``formats.py``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--patches", type=int, default=96)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    p.add_argument("--sync-batchnorm", default="false", choices=["true", "false"])
    p.add_argument("--threads-per-rank", type=int, default=1, help="torch threads of every rank, 1 and N alike")
    p.add_argument(
        "--slurm",
        action="store_true",
        help="run the multi-rank searches as a SLURM job, one rank per node, MPI over TCP (the dev cluster's "
        "emulated nodes: slurm/dev-cluster/run.sh python benchmarks/data_parallel.py --slurm)",
    )
    p.add_argument("--json")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(int(n), args, Path(tmp)) for n in args.ranks.split(",")]
    base = rows[0]["images_per_s"] / rows[0]["ranks"]
    for r in rows:
        r["scaling_efficiency"] = r["images_per_s"] / (base * r["ranks"])
    print(
        f"{'ranks':>6}{'nodes':>6}{'device':>8}{'batch/rank':>12}{'images/s':>10}{'efficiency':>12}"
        f"{'coll/step':>11}{'wait':>7}"
    )
    for r in rows:
        print(
            f"{r['ranks']:>6}{r['nodes']:>6}{r['device']:>8}{r['batch_per_rank']:>12}{r['images_per_s']:>10.2f}"
            f"{r['scaling_efficiency']:>12.2f}{r['collectives_per_step']:>11.0f}{r['collective_share']:>7.0%}"
        )
    emit({"benchmark": "data_parallel", "cpus": os.cpu_count(), "environment": tuning(), "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
