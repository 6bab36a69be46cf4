"""Data parallelism behind one small interface, with two backends.

:class:`SingleProcess` is the plain run; :class:`~hpcnas.distributed.horovod.HorovodContext`
is the same interface under ``horovodrun``, ``mpirun`` or ``srun``.  The
search loop calls only these methods, so it reads the same either way.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, List

RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")
# Open MPI's hwloc probes X displays as it starts; display :6 is TCP port 6006, TensorBoard's default, where a
# listening TensorBoard never answers: every mpirun on that node then hangs (`mpirun -np 1 true` included), and
# starts in 0.04 s without the probe. For mpirun's own environment (job scripts, hpcnas submit, the README) and,
# set by the command line before MPI starts, for every rank's MPI_Init.
MPI_LAUNCH_ENV = {"HWLOC_COMPONENTS": "-gl"}


def mpi_launch_defaults() -> None:
    """Set :data:`MPI_LAUNCH_ENV` in this process's environment, unless the user set those variables."""
    for key, value in MPI_LAUNCH_ENV.items():
        os.environ.setdefault(key, value)


def available_cpus() -> "tuple[int, str]":
    """How many CPUs this process should use, and why: the fewest of the CPUs it may run on
    (``sched_getaffinity``: cgroups, taskset, SLURM's binding), ``SLURM_CPUS_PER_TASK`` and
    ``OMP_NUM_THREADS`` when set.  ``os.cpu_count()`` counts the whole node, which oversubscribes a
    shared machine."""
    try:
        count, why = len(os.sched_getaffinity(0)), "CPUs this process may run on"
    except (AttributeError, OSError):  # not on Linux
        count, why = os.cpu_count() or 1, "CPUs of the machine"
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and 0 < int(value) < count:
            count, why = int(value), name
    return max(1, count), why


def use_cpu_threads(ranks_on_node: int = 1) -> int:
    """Set torch's threads to this process's share of :func:`available_cpus`, split between the ranks of
    its node; returns the count (logged at debug level with the reason)."""
    import torch

    cpus, why = available_cpus()
    threads = max(1, cpus // max(1, ranks_on_node))
    torch.set_num_threads(threads)
    share = f" / {ranks_on_node} rank(s) on this node" if ranks_on_node > 1 else ""
    logging.getLogger("hpcnas").debug("torch threads: %d (%d %s%s)", threads, cpus, why, share)
    return threads


def launched_size() -> int:
    """How many ranks the launcher started (1 when run alone)."""
    for name in SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            if name == "SLURM_NTASKS" and "SLURM_STEP_ID" not in os.environ:
                continue  # inside an sbatch script but not under srun: still one process
            return int(os.environ[name])
    return 1


def launched_rank() -> int:
    """This process's rank according to the launcher (0 when run alone)."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            if name == "SLURM_PROCID" and "SLURM_STEP_ID" not in os.environ:
                continue
            return int(os.environ[name])
    return 0


class SingleProcess:
    """The one-process backend: every collective is the identity."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    @property
    def is_root(self) -> bool:
        """Whether this rank writes files and logs."""
        return self.rank == 0

    def average_gradients_(self, params: Iterable) -> None:
        """Average ``p.grad`` across ranks, in place."""

    def sum(self, value, name: str = "hpcnas.sum"):
        """Sum a tensor or numpy array across ranks (``name``: the same on every rank, for each call site)."""
        return value

    def collectives(self) -> "tuple[int, float]":
        """Blocking collectives run so far, and the seconds spent waiting in them."""
        return 0, 0.0

    def broadcast_state(self, model, optimizers: Dict[str, Any]) -> None:
        """Give every rank rank 0's parameters, buffers and optimizer states."""

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def distributed_optimizer(self, optimizer, named_parameters: List):
        """Wrap the weight optimizer so gradients are averaged across ranks."""
        return optimizer

    def step(self, optimizer, before_step=None) -> None:
        """Synchronize gradients, run ``before_step`` (clipping), then step."""
        if before_step is not None:
            before_step()
        optimizer.step()

    def sync_batch_norm(self, model):
        """BatchNorm layers whose statistics span every rank's batch."""
        return model

    def check_identical(self, tensors: Iterable, what: str) -> None:
        """Raise if ``tensors`` differ across ranks."""

    def barrier(self) -> None:
        """Wait for every rank."""

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        return bool(flag)


def setup() -> "SingleProcess":
    """The backend for how this process was launched."""
    if launched_size() <= 1:
        return SingleProcess()
    from hpcnas.distributed.horovod import HorovodContext

    return HorovodContext()
