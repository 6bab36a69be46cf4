"""Horovod backend: initialization, optimizers, synchronized BatchNorm, collectives, drift checks.

* mpi4py is imported before ``hvd.init(comm=...)`` so Horovod's shutdown does
  not finalize MPI under mpi4py (which finalizes it itself, at exit).
* Weights: ``hvd.DistributedOptimizer``; architecture parameters: their
  gradients averaged by allreduce before the GAEA / Adam step, so every rank
  holds identical theta; a cheap checksum turns any drift into an error.
* With ``search.sync_batchnorm`` (off by default: each rank keeps its own),
  BatchNorm statistics are summed over all ranks (:class:`SyncBatchNorm2d`),
  so N ranks with per-rank batch b compute what one rank with batch N*b does.
* On CPUs, idle Open MPI yields the core instead of spinning.
* Horovod's stall check is on by default, so a dead rank ends the job with an
  error within a bounded time instead of a silent hang; its response cache
  holds every tensor a supernet's step names.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Iterable, List, Tuple

import torch
from torch import nn

from hpcnas.distributed import SingleProcess
from hpcnas.errors import UserError

# Horovod's settings unless the environment sets them: its stall check on; a response cache larger than the
# default 1,024 tensors, which a supernet's weight gradients alone exceed (1,075 for the benchmark DARTS-UNet,
# 1,604 for DARTS-UNet++), so that every step's allreduces miss the cache and go through the coordinator
HOROVOD_DEFAULTS = {
    "HOROVOD_STALL_CHECK_TIME_SECONDS": "30",
    "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "120",
    "HOROVOD_CACHE_CAPACITY": "8192",
}
# Ranks that train on CPUs share the cores with Open MPI's progress loop, which by default spins while it waits:
# told to yield, 2 ranks x 1 thread went from 0.58 to 0.93 of linear scaling (benchmarks/data_parallel.py).
# Read by MPI_Init, so it is set before mpi4py is imported; on GPUs the spinning costs no compute.
CPU_MPI_DEFAULTS = {"OMPI_MCA_mpi_yield_when_idle": "1"}


class DriftError(RuntimeError):
    """Ranks disagree on values that must be identical."""


class HorovodContext(SingleProcess):
    """Horovod over MPI (or Gloo under ``horovodrun --gloo``)."""

    def __init__(self) -> None:
        defaults = {**HOROVOD_DEFAULTS, **({} if torch.cuda.is_available() else CPU_MPI_DEFAULTS)}
        for key, value in defaults.items():
            os.environ.setdefault(key, value)
        try:
            import horovod.torch as hvd
        except ImportError:
            raise UserError(
                "launched on several ranks but horovod is not installed (envs/setup.sh builds it)"
            ) from None
        comm = None
        if "HOROVOD_RANK" not in os.environ:  # MPI launch (mpirun / srun): share mpi4py's communicator
            try:
                from mpi4py import MPI

                comm = MPI.COMM_WORLD
            except ImportError:
                comm = None
        hvd.init(comm=comm) if comm is not None else hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.collective_count, self.collective_seconds = 0, 0.0
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank % torch.cuda.device_count())

    def _timed(self, collective, *args, **kwargs):
        """Run one blocking collective, counted with its wall time (what the step waits for)."""
        start = time.perf_counter()
        try:
            return collective(*args, **kwargs)
        finally:
            self.collective_count += 1
            self.collective_seconds += time.perf_counter() - start

    def collectives(self) -> Tuple[int, float]:
        return self.collective_count, self.collective_seconds

    def allreduce_sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """Sum ``tensor`` over the ranks under a fixed ``name`` (so Horovod's response cache hits)."""
        return self._timed(self.hvd.allreduce, tensor, op=self.hvd.Sum, name=name)

    def average_gradients_(self, params: Iterable) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            reduced = self._timed(self.hvd.grouped_allreduce, grads, op=self.hvd.Average, name="hpcnas.arch_grads")
            for g, r in zip(grads, reduced):
                g.copy_(r)

    def sum(self, value, name: str = "hpcnas.sum"):
        import numpy as np

        if isinstance(value, np.ndarray):
            return self.allreduce_sum(torch.from_numpy(value), f"{name}.np").numpy()
        return self.allreduce_sum(value, name)

    def broadcast_state(self, model, optimizers: Dict[str, Any]) -> None:
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        for name, opt in optimizers.items():
            # as a pickled object, not hvd.broadcast_optimizer_state: that sends the learning rate
            # through a float32 tensor, and the rounded lr then drifts the cosine schedule
            opt.load_state_dict(
                self.hvd.broadcast_object(opt.state_dict(), root_rank=0, name=f"hpcnas.optimizer.{name}")
            )

    def broadcast_object(self, obj: Any) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0, name="hpcnas.object")

    def distributed_optimizer(self, optimizer, named_parameters: List):
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=named_parameters)

    def step(self, optimizer, before_step=None) -> None:
        self._timed(optimizer.synchronize)  # averaged gradients first, so clipping sees the global gradient
        if before_step is not None:
            before_step()
        with optimizer.skip_synchronize():
            optimizer.step()

    def sync_batch_norm(self, model):
        return convert_sync_batch_norm(model, self)

    def check_identical(self, tensors: Iterable, what: str) -> None:
        with torch.no_grad():
            local = torch.stack([t.detach().double().sum().cpu() for t in tensors]).sum().reshape(1)
        every = self.hvd.allgather(local, name="checksum")
        spread = float(every.max() - every.min())
        if spread > 1e-6 * (1.0 + float(every.abs().max())):
            raise DriftError(f"{what} differ across ranks (checksums {every.tolist()}): ranks diverged")

    def barrier(self) -> None:
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def any(self, flag: bool) -> bool:
        reduced = self._timed(self.hvd.allreduce, torch.tensor([float(flag)]), op=self.hvd.Max, name="hpcnas.any")
        return bool(reduced[0] > 0)


class _SummedOverRanks(torch.autograd.Function):
    """A differentiable allreduce-sum under a fixed name: Horovod's response cache then knows it from the
    second step on, instead of negotiating a fresh name through the coordinator every time.  Every rank's
    loss depends on the sum, so the gradient of each input is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor, hvd_ctx, name):
        ctx.hvd_ctx, ctx.name = hvd_ctx, name
        return hvd_ctx.allreduce_sum(tensor, f"{name}.fwd")

    @staticmethod
    def backward(ctx, grad):
        return ctx.hvd_ctx.allreduce_sum(grad.contiguous(), f"{ctx.name}.bwd"), None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose batch statistics are summed across every rank (differentiable allreduce).

    Exact (N ranks with batch b compute what one rank with batch N*b does) but one blocking collective
    per layer in the forward pass and one in the backward pass, which no grouping can avoid: each
    layer needs its statistics before the next layer runs.
    """

    ctx: HorovodContext = None
    collective_name = "hpcnas.bn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        x = x.float()  # under bf16 autocast too: sums of squares and counts need float32
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        total = _SummedOverRanks.apply(stats, self.ctx, self.collective_name)
        n = total[-1]
        mean = total[:c] / n
        var = total[c : 2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():  # all on the device: no float(n), no wait for the GPU per layer
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1.0))
                self.num_batches_tracked += 1
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batch_norm(module: nn.Module, ctx: HorovodContext) -> nn.Module:
    """Replace every BatchNorm2d (weights and buffers kept) by :class:`SyncBatchNorm2d`."""
    for index, (name, parent, child) in enumerate(list(_batch_norms(module))):
        sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
        sync.load_state_dict(child.state_dict())
        sync.ctx = ctx
        sync.collective_name = f"hpcnas.bn{index}"  # the same on every rank: modules are built in one order
        setattr(parent, name, sync.to(next(child.buffers()).device))
    return module


def _batch_norms(module: nn.Module):
    """``(attribute, parent, layer)`` of every plain BatchNorm2d below ``module``, in definition order."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                yield name, parent, child
