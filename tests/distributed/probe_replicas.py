"""Run under mpirun by the tests: theta must be bit-identical on every rank; planted drift must be caught.

mpirun -np 2 python tests/distributed/probe_replicas.py OUT_DIR
"""

import sys

import torch

from hpcnas.config import load_config
from hpcnas.data.hdf5 import read_info
from hpcnas.distributed import setup
from hpcnas.distributed.horovod import DriftError
from hpcnas.search.continuous import SupernetSearch


def main(out: str) -> int:
    ctx = setup()
    cfg = load_config(
        "configs/smoke.yaml",
        ["search.epochs=1", "search.arch_start_epoch=0", "search.batch_size=2", "device=cpu", "search.arch_lr=0.1"],
    )
    data = f"{out}/data.h5"
    if ctx.is_root:
        from hpcnas.data.synth import synthesize

        synthesize(data, n=16, size=32, seed=0)
    ctx.barrier()
    runner = SupernetSearch(cfg, out, data, read_info(data), torch.device("cpu"), ctx)
    runner.run()
    theta = torch.cat([p.detach().flatten() for p in runner.model.arch_parameters()])
    every = ctx.hvd.allgather(theta.unsqueeze(0), name="theta")
    identical = all(torch.equal(every[0], every[r]) for r in range(ctx.size))
    print(f"rank {ctx.rank}: theta identical on {ctx.size} ranks: {identical}", flush=True)
    # plant drift on the last rank: the checksum must turn it into an error on every rank
    if ctx.rank == ctx.size - 1:
        with torch.no_grad():
            runner.model.arch_parameters()[0][0, 0] += 0.01
    try:
        runner.check_replicas()
        print(f"rank {ctx.rank}: drift NOT detected", flush=True)
    except DriftError as exc:
        print(f"rank {ctx.rank}: drift detected: {exc}", flush=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
