"""One PC-DARTS search cell, hpcnas's against a minimal reference, side by side.

The reference is written here from the published PC-DARTS algorithm (Xu et al. 2020): every edge sends a fixed
first C/K of its channels through the weighted sum of the ops, concatenates the other channels after them
(max-pooled on strided edges) and shuffles the channels in K groups; each node sums its input edges weighted
by the softmax of its own edge weights; the cell's output concatenates its nodes.  Both sides use the same op
modules (hpcnas.space.ops), so the comparison is about the mixed op and the cell around them: hpcnas with
its default random channel sampling and with the reference's shuffle.

Per cell, normal (stride 1) and reduction (stride 2 from the inputs): the mean forward+backward time over
``--steps`` after ``--warmup``, and the bytes autograd saves for backward (parameters not counted).

    python benchmarks/cell.py [--batch 8] [--channels 16] [--size 64] [--k 4] [--json results/F.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _emit import emit  # benchmarks/_emit.py, beside this script
from torch import nn

from hpcnas.space.cells import CellArch, make_cell, search_edges
from hpcnas.space.mixed import channel_shuffle
from hpcnas.space.ops import ReLUConvBN, build_op, is_parameter_free_pool
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.memory import saved_storages

NODES = 4


class ReferenceEdge(nn.Module):
    """The PC-DARTS mixed op: the first C/K channels through the ops, the rest bypass, then a shuffle."""

    def __init__(self, op_names, c: int, stride: int, k: int):
        super().__init__()
        self.k, self.stride = k, stride
        self.width = c // k
        ops = []
        for name in op_names:
            op = build_op(name, self.width, stride, affine=False)
            ops.append(
                nn.Sequential(op, nn.BatchNorm2d(self.width, affine=False)) if is_parameter_free_pool(name) else op
            )
        self.ops = nn.ModuleList(ops)

    def forward(self, x, weights):
        through, bypass = x[:, : self.width], x[:, self.width :]
        mixed = sum(w * op(through) for w, op in zip(weights, self.ops))
        if self.stride == 2:
            bypass = nn.functional.max_pool2d(bypass, 2, 2)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)


class ReferenceCell(nn.Module):
    """Two preprocessed inputs, NODES nodes each reading every earlier state, output: the nodes concatenated."""

    def __init__(self, op_names, c_prev_prev: int, c_prev: int, c: int, reduction: bool, k: int):
        super().__init__()
        self.pre0 = ReLUConvBN(c_prev_prev, c, 1, affine=False)
        self.pre1 = ReLUConvBN(c_prev, c, 1, affine=False)
        self.edges = nn.ModuleList()
        for node in range(NODES):
            for source in range(2 + node):
                self.edges.append(ReferenceEdge(op_names, c, 2 if reduction and source < 2 else 1, k))

    def forward(self, s0, s1, op_weights, edge_weights):
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for node in range(NODES):
            total = 0
            for j, h in enumerate(states):
                total = total + edge_weights[node][j] * self.edges[e](h, op_weights[e])
                e += 1
            states.append(total)
        return torch.cat(states[2:], dim=1)


class Architecture:
    """Op weights per edge and edge weights per node (edge normalization), softmaxed each step as in the search."""

    def __init__(self, edges: int, ops: int):
        self.alpha = torch.randn(edges, ops, requires_grad=True)
        self.betas = [torch.randn(2 + n, requires_grad=True) for n in range(NODES)]

    def weights(self):
        return self.alpha.softmax(-1), [b.softmax(-1) for b in self.betas]

    def leaves(self):
        return [self.alpha, *self.betas]


def time_step(forward, leaves, warmup: int, steps: int) -> float:
    """Mean seconds of forward + backward."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        forward().float().mean().backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        for leaf in leaves:
            leaf.grad = None
    return statistics.mean(times)


def measure(reduction: bool, side: str, args) -> dict:
    torch.manual_seed(0)
    space = SearchSpace.of("darts_unet", nodes=NODES, depth=3)
    c_in, c = 4 * args.channels, args.channels
    s0 = torch.randn(args.batch, c_in, args.size, args.size)
    s1 = torch.randn(args.batch, c_in, args.size, args.size)
    edges = sum(2 + n for n in range(NODES))
    if side == "reference":
        cell = ReferenceCell(space.ops, c_in, c_in, c, reduction, args.k)

        def forward():
            ops, node_weights = arch.weights()
            return cell(s0, s1, ops, node_weights)

    else:
        sampling = side.split("-")[1]
        generator = torch.Generator().manual_seed(0)
        cell = make_cell(
            space.kind,
            search_edges(space, c, reduction, args.k, generator, sampling),
            [c_in, c_in],
            c,
            reduction,
            False,
            affine=False,
        )

        def forward():
            ops, node_weights = arch.weights()
            return cell([s0, s1], CellArch(ops, node_weights))

    cell.train()
    arch = Architecture(edges, len(space.ops))
    seconds = time_step(forward, [*cell.parameters(), *arch.leaves()], args.warmup, args.steps)
    saved = sum(t.untyped_storage().nbytes() for t in saved_storages(forward, cell.parameters()).values())
    return {
        "cell": "reduction" if reduction else "normal",
        "side": side,
        "ms": 1000 * seconds,
        "saved_mb": saved / 2**20,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="alternate the sides this many times (order effects)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sides = ("reference", "hpcnas-shuffle", "hpcnas-random")
    runs = {}
    for _ in range(args.repeats):
        for reduction in (False, True):
            for side in sides:
                r = measure(reduction, side, args)
                runs.setdefault((r["cell"], side), []).append(r)
    rows = []
    for (cell, side), got in runs.items():
        rows.append(
            {
                "cell": cell,
                "side": side,
                "ms": statistics.median(r["ms"] for r in got),
                "ms_runs": [r["ms"] for r in got],
                "saved_mb": got[0]["saved_mb"],
            }
        )
    ref = {r["cell"]: r for r in rows if r["side"] == "reference"}
    for r in rows:
        r["time_ratio"] = r["ms"] / ref[r["cell"]]["ms"]
        r["saved_ratio"] = r["saved_mb"] / ref[r["cell"]]["saved_mb"]
    print(f"{'cell':<11}{'side':<16}{'fwd+bwd ms':>11}{'x ref':>7}{'saved MB':>10}{'x ref':>7}")
    for r in rows:
        print(
            f"{r['cell']:<11}{r['side']:<16}{r['ms']:>11.1f}{r['time_ratio']:>7.2f}{r['saved_mb']:>10.1f}"
            f"{r['saved_ratio']:>7.2f}"
        )
    emit({"benchmark": "cell", "torch": torch.__version__, "args": vars(args), "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
