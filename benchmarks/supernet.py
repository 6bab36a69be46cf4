"""Supernet cost per topology and partial-channel K: step time and memory.

For each topology and K in {1, 2, 4, 8}: the mean forward+backward time of
one training step, the activation memory (bytes of tensors saved for
backward, parameters excluded, counted on any device), and on CUDA the peak allocated memory.
PC-DARTS' premise: K = 4 needs well under half the activation memory of K = 1.

TensorBoard's cost per step: the time the training loop spends in its
per-step write (the step's losses) and, once per epoch, in writing theta's
op weights of every edge, against the step time (goal: under 1 %).

    python benchmarks/supernet.py [--device cuda] [--size 64] [--batch 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _emit import emit  # benchmarks/_emit.py, beside this script

from hpcnas.board import Board
from hpcnas.space.genotype import TOPOLOGIES
from hpcnas.space.networks import build_search_network
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.memory import saved_bytes


def measure(topology: str, k: int, args, device: torch.device) -> dict:
    """One row of the table."""
    torch.manual_seed(0)
    space = SearchSpace.of(topology, nodes=args.nodes, depth=args.depth)
    model = build_search_network(space, 3, 2, channels=args.channels, partial=k, device=device).to(device)
    size = max(args.size, space.stride())
    x = torch.randn(args.batch, 3, size, size, device=device)
    act = saved_bytes(model, x)  # what the memory estimate is calibrated against: parameters excluded
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times, board_ms = [], []
    # written in the foreground: the whole CPU cost of the events, an upper bound on what a step loses (the loop
    # only queues them for a background thread)
    board = Board(Path(tempfile.mkdtemp()) / "tb")
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = model(x).mean()
        loss.backward()
        t1 = time.perf_counter()
        board.scalars({"train_loss": loss.item(), "arch_loss": loss.item()}, i, prefix="step")
        board_ms.append(1000 * (time.perf_counter() - t1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    t0 = time.perf_counter()
    snap = model.arch.snapshot()
    board.scalars(
        {
            role: {f"e{e:02d}": dict(zip(model.arch.op_names, map(float, row))) for e, row in enumerate(w)}
            for role, w in snap["ops"].items()
        },
        0,
        prefix="theta",
    )
    epoch_ms = 1000 * (time.perf_counter() - t0)
    board.close()
    step_ms = 1000 * sum(times) / len(times)
    return {
        "topology": topology,
        "K": k,
        "device": str(device),
        "input": size,
        "batch": args.batch,
        "step_ms": step_ms,
        "board_step_ms": sum(board_ms[args.warmup :]) / args.steps,
        "board_epoch_ms": epoch_ms,  # theta's weights, once per epoch
        "board_overhead": sum(board_ms[args.warmup :]) / args.steps / step_ms,
        "activation_mb": act / 2**20,
        "peak_mb": peak,
        "params": sum(p.numel() for p in model.weight_parameters()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--ks", default="1,2,4,8")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = [measure(t, int(k), args, device) for t in args.topologies.split(",") for k in args.ks.split(",")]
    base = {r["topology"]: r for r in rows if r["K"] == 1}
    for r in rows:
        ref = base.get(r["topology"])
        r["activation_vs_k1"] = r["activation_mb"] / ref["activation_mb"] if ref else None
    print(
        f"{'topology':<14}{'K':>3}{'step ms':>10}{'activ. MB':>11}{'vs K=1':>8}{'peak MB':>9}{'params':>10}"
        f"{'tb/step %':>10}{'tb/epoch ms':>12}"
    )
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        ratio = f"{r['activation_vs_k1']:.2f}" if r["activation_vs_k1"] is not None else "-"
        print(
            f"{r['topology']:<14}{r['K']:>3}{r['step_ms']:>10.1f}{r['activation_mb']:>11.1f}{ratio:>8}{peak:>9}"
            f"{r['params']:>10}{100 * r['board_overhead']:>10.3f}{r['board_epoch_ms']:>12.2f}"
        )
    emit({"benchmark": "supernet", "torch": torch.__version__, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
