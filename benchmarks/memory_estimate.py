"""How good is the memory estimate the dispatcher uses (hpcnas.train.memory), and how cheap?

For random architectures of each topology: the estimate from one tiny trace (batch 2, one network stride,
on the CPU) against the bytes autograd really saves at the full batch and tile (CPU), and, on a GPU, the
estimated peak against ``torch.cuda.max_memory_allocated`` over one SGD step.  The time is what the
dispatcher pays per architecture: building the network and tracing it, one thread.

    python benchmarks/memory_estimate.py [--archs 20] [--batch 4] [--tile 128] [--json results/F.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import torch
from _emit import emit  # benchmarks/_emit.py, beside this script

from hpcnas.config import load_config
from hpcnas.space.genotype import TOPOLOGIES
from hpcnas.space.networks import build_discrete_network
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.memory import estimate_training_memory, saved_bytes


def gpu_peak(model, batch: int, tile: int, in_channels: int, classes: int) -> int:
    """Peak CUDA bytes over one SGD step with momentum (the evaluations' optimizer)."""
    device = torch.device("cuda")
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, in_channels, tile, tile, device=device)
    y = torch.randint(0, classes, (batch, tile, tile), device=device)
    for _ in range(2):  # the second step holds the momentum buffers from the first
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() - sum(p.numel() * p.element_size() for p in model.parameters())
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base - x.nbytes - y.nbytes


def measure(topology: str, args) -> list:
    cfg = load_config(
        None, [f"space.topology={topology}", f"space.depth={args.depth}", f"space.channels={args.channels}"]
    )
    space = SearchSpace.from_config(cfg)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.archs):
        genotype = space.sample(rng)
        t0 = time.perf_counter()
        model = build_discrete_network(genotype, 3, args.classes, channels=args.channels, depth=args.depth)
        estimate = estimate_training_memory(model, 3, args.tile, space.stride())
        seconds = time.perf_counter() - t0
        measured = saved_bytes(model, torch.randn(args.batch, 3, args.tile, args.tile))
        row = {
            "topology": topology,
            "arch": i,
            "estimate_ms": 1000 * seconds,
            "saved_mb_estimate": estimate.saved(args.batch) / 2**20,
            "saved_mb_measured": measured / 2**20,
            "saved_error": estimate.saved(args.batch) / measured - 1,
            "peak_mb_estimate": estimate.total(args.batch) / 2**20,
        }
        if torch.cuda.is_available():
            peak = gpu_peak(model, args.batch, args.tile, 3, args.classes)
            row["peak_mb_cuda"] = peak / 2**20
            row["peak_error"] = estimate.total(args.batch) / peak - 1
        rows.append(row)
    return rows


def summary(rows: list, key: str) -> dict:
    errors = [r[key] for r in rows if key in r]
    if not errors:
        return {}
    absolute = sorted(abs(e) for e in errors)
    return {
        "n": len(errors),
        "min": min(errors),
        "median": statistics.median(errors),
        "max": max(errors),
        "p90_abs": absolute[int(0.9 * (len(absolute) - 1))],
        "within_10pct": sum(a <= 0.10 for a in absolute) / len(absolute),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as on rank 0
    rows, tables = [], {}
    for topology in args.topologies.split(","):
        got = measure(topology, args)
        rows += got
        tables[topology] = {
            "saved": summary(got, "saved_error"),
            "peak_cuda": summary(got, "peak_error"),
            "estimate_ms_median": statistics.median(r["estimate_ms"] for r in got),
            "estimate_ms_max": max(r["estimate_ms"] for r in got),
        }
    print(
        f"{'topology':<14}{'n':>4}{'error min':>11}{'median':>9}{'max':>8}{'<=10%':>7}{'ms med':>8}{'ms max':>8}"
        "  (saved bytes)"
    )
    for topology, t in tables.items():
        s = t["saved"]
        print(
            f"{topology:<14}{s['n']:>4}{100 * s['min']:>10.2f}%{100 * s['median']:>8.2f}%{100 * s['max']:>7.2f}%"
            f"{100 * s['within_10pct']:>6.0f}%{t['estimate_ms_median']:>8.1f}{t['estimate_ms_max']:>8.1f}"
        )
        if t["peak_cuda"]:
            c = t["peak_cuda"]
            print(
                f"{'  CUDA peak':<14}{c['n']:>4}{100 * c['min']:>10.2f}%{100 * c['median']:>8.2f}%"
                f"{100 * c['max']:>7.2f}%"
            )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    emit(
        {"benchmark": "memory_estimate", "device": device, "torch": torch.__version__, "summary": tables, "rows": rows},
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
