"""A whole search step and where its time goes: candidate ops, the partial-channel bypass, collectives, data.

Runs the real search loop (``SupernetSearch``: an architecture step and a
weight step per batch) on generated data, first plainly for the step time,
then with module hooks that time every candidate op and every mixed edge,
forward and backward.  The loop's own counters give the wait for data and,
under mpirun, for blocking collectives.  Per step:

* ops: the candidate ops of every mixed edge;
* bypass: the rest of each mixed edge (choosing the C/K channels by slice or
  gather, the bypass and its max-pool on strided edges, concatenation,
  shuffle or reordering, the weighted sum);
* collectives: waiting in blocking allreduces (several ranks only);
* data: waiting for the next batch;
* other: stems, preprocessing, up-sampling, edge weights, losses, clipping
  and optimizer steps.

Each kind of span is timed in its own epoch, and the shares are of the
plain step; the hooks cost time of their own (reported as the hooked
epochs' overhead), which the spans partly include, so "bypass" and "other"
are good to a few percent of the step.  CPU only: on a GPU, host-side hook
times say nothing about the kernels.

    python benchmarks/step.py [--sampling random,shuffle] [--size 64] [--batch 8] [--channels 16] [--json out.json]
    mpirun -np 2 python benchmarks/step.py ...      (data parallel: the collectives appear)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from _emit import emit, tuning  # noqa: E402 - benchmarks/_emit.py, beside this script

from hpcnas.config import load_config  # noqa: E402
from hpcnas.data.hdf5 import read_info  # noqa: E402
from hpcnas.distributed import setup, use_cpu_threads  # noqa: E402
from hpcnas.pipeline import resolve_data  # noqa: E402
from hpcnas.search.continuous import SupernetSearch  # noqa: E402
from hpcnas.space.mixed import MixedOp  # noqa: E402


class SpanTimer:
    """Seconds spent inside a set of modules, forward and backward, by module hooks (spans must not nest), less
    the time waiting in collectives meanwhile (synchronized BatchNorm waits inside the ops)."""

    def __init__(self, modules, waited=lambda: 0.0):
        self.seconds, self.handles, self.started, self.waited = 0.0, [], {}, waited
        for module in modules:
            self.handles += [
                module.register_forward_pre_hook(self._begin),
                module.register_forward_hook(self._end),
                module.register_full_backward_pre_hook(self._begin),
                module.register_full_backward_hook(self._end),
            ]

    def _begin(self, module, *_):
        self.started[id(module)] = (time.perf_counter(), self.waited())

    def _end(self, module, *_):
        t0, w0 = self.started.pop(id(module))
        self.seconds += time.perf_counter() - t0 - (self.waited() - w0)

    def remove(self) -> None:
        """Take the hooks off."""
        for handle in self.handles:
            handle.remove()


def overrides(args, sampling: str) -> list:
    """The config of the measured search."""
    return [
        f"data.synth.n={args.patches}",
        f"data.synth.size={args.size}",
        "data.synth.val_fraction=0.1",
        "data.synth.test_fraction=0.0",
        f"space.channels={args.channels}",
        f"space.depth={args.depth}",
        f"space.nodes={args.nodes}",
        f"search.partial_channels={args.k}",
        f"search.channel_sampling={sampling}",
        f"search.batch_size={args.batch}",
        f"search.max_steps_per_epoch={args.steps}",
        "search.epochs=4",
        "search.arch_start_epoch=0",
        f"search.sync_batchnorm={args.sync_batchnorm}",
        "monitor.tensorboard=false",
        "device=cpu",
    ]


def measure(sampling: str, args, ctx, workdir: Path) -> dict:
    """Epoch 0 warms up; epoch 1 runs plainly (the step time, data and collectives); epoch 2 times the mixed
    edges, epoch 3 their candidate ops, each with its own hooks, so that neither's hooks land in the other."""
    cfg = load_config(str(ROOT / "configs" / "smoke.yaml"), overrides(args, sampling))
    data = resolve_data(cfg, workdir / sampling) if ctx.is_root else None
    data = ctx.broadcast_object(data)
    runner = SupernetSearch(cfg, workdir / sampling, data, read_info(data), torch.device("cpu"), ctx)
    steps = runner.steps_per_epoch
    mixed = [m for m in runner.model.modules() if isinstance(m, MixedOp)]

    def epoch(index: int, timed=()) -> tuple:
        timer = SpanTimer(timed, waited=lambda: ctx.collectives()[1])
        count0, wait0 = ctx.collectives()
        t0 = time.perf_counter()
        runner.train_epoch(index)
        count, wait = ctx.collectives()
        timer.remove()
        return time.perf_counter() - t0, timer.seconds, runner.data_wait_s, count - count0, wait - wait0

    epoch(0)
    plain_s, _, data_s, collectives, collective_s = epoch(1)
    edges_epoch_s, edges_s, _, _, _ = epoch(2, mixed)
    ops_epoch_s, ops_s, _, _, _ = epoch(3, [op for m in mixed for op in m.ops])
    per_step = {"ops": ops_s, "bypass": edges_s - ops_s, "collectives": collective_s, "data": data_s}
    per_step["other"] = plain_s - sum(per_step.values())
    return {
        "sampling": sampling,
        "ranks": ctx.size,
        "steps": steps,
        "mixed_edges": len(mixed),
        "step_ms": 1000 * plain_s / steps,
        "hook_overhead": {"edges": edges_epoch_s / plain_s - 1, "ops": ops_epoch_s / plain_s - 1},
        "collectives_per_step": collectives / steps,
        "ms_per_step": {k: 1000 * v / steps for k, v in per_step.items()},
        "share": {k: v / plain_s for k, v in per_step.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sampling", default="random,shuffle", help="channel sampling schemes to measure")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="per rank")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--k", type=int, default=4, help="partial channels: 1/K go through the ops")
    p.add_argument("--steps", type=int, default=6, help="steps per epoch")
    p.add_argument("--patches", type=int, default=64, help="generated patches per rank")
    p.add_argument("--sync-batchnorm", default="false", choices=["true", "false"])
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    ctx = setup()
    threads = use_cpu_threads(ctx.local_size)
    args.patches *= ctx.size
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(ctx.broadcast_object(tmp if ctx.is_root else None))
        rows = [measure(s, args, ctx, workdir) for s in args.sampling.split(",")]
    if not ctx.is_root:
        return 0
    parts = ("ops", "bypass", "collectives", "data", "other")
    print(f"{'sampling':<9}{'ranks':>6}{'step ms':>9}{'hooks +%':>9}" + "".join(f"{p:>14}" for p in parts))
    for r in rows:
        shares = "".join(f"{r['ms_per_step'][p]:>8.1f} {100 * r['share'][p]:>3.0f}% " for p in parts)
        hooks = 100 * max(r["hook_overhead"].values())
        print(f"{r['sampling']:<9}{r['ranks']:>6}{r['step_ms']:>9.1f}{hooks:>9.0f}  {shares}")
    emit(
        {
            "benchmark": "step",
            "torch": torch.__version__,
            "threads_per_rank": threads,
            "shape": {k: getattr(args, k) for k in ("size", "batch", "channels", "depth", "nodes", "k")},
            "sync_batchnorm": args.sync_batchnorm,
            "launched_ranks": ctx.size,
            "environment": tuning(),
            "rows": rows,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
