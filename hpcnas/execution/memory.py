"""Memory-aware dispatch: rank 0 estimates an architecture's peak training memory before sending it.

The estimate (:mod:`hpcnas.train.memory`) needs torch on rank 0, imported here only when ``evolve.memory.limit``
is set.  Policy ``shrink_batch`` dispatches at the largest batch whose estimate fits (recorded in the task and
the history); ``skip`` records the status ``too_big`` without training.  An architecture that does not fit even
at batch 1 is ``too_big`` under either policy.  The out-of-memory retry at half batch stays as the safety net
for what the estimate does not model.
"""

from __future__ import annotations

import logging
from typing import List, Optional

from hpcnas.config import Config
from hpcnas.errors import UserError
from hpcnas.records import Task

log = logging.getLogger("hpcnas")

GIB = 2**30
AUTO_SHARE = 0.9  # of the device's memory: CUDA's context, the allocator's slack and cuDNN's workspaces


def memory_limit(cfg: Config, reported: List[Optional[int]]) -> Optional[float]:
    """Bytes an evaluation may use: ``evolve.memory.limit`` in GiB, or with ``auto`` 90 % of the smallest device
    memory the ranks' children reported; ``None`` when no limit is set."""
    limit = cfg.evolve.memory.limit
    if limit is None:
        return None
    if limit != "auto":
        return float(limit) * GIB
    known = [r for r in reported if r]
    if not known:
        raise UserError("no worker reported its device memory", key="evolve.memory.limit")
    return AUTO_SHARE * min(known)


class MemoryGate:
    """Sets each task's batch from its estimated peak memory; says when it cannot run at all."""

    def __init__(self, cfg: Config, data: str, limit: float):
        import torch

        from hpcnas.data.hdf5 import read_info
        from hpcnas.space.searchspace import SearchSpace

        self.cfg, self.limit, self.policy = cfg, limit, cfg.evolve.memory.policy
        self.info = read_info(data)
        self.stride = SearchSpace.from_config(cfg).stride()
        torch.set_num_threads(1)  # tiny traces gain nothing from threads, and rank 0's own worker needs the cores
        log.info("memory gate: %.2f GiB per evaluation, policy %s", limit / GIB, self.policy)

    def admit(self, task: Task) -> bool:
        """Set ``task``'s estimate (and a smaller batch, shrinking); false when it must be recorded too_big."""
        import torch

        from hpcnas.train.memory import estimate_training_memory
        from hpcnas.train.spec import model_spec

        spec = model_spec(self.cfg, self.info, task.genotype, measure=False)
        with torch.random.fork_rng(devices=[]):
            model = spec.build()
        estimate = estimate_training_memory(model, self.info.channels, self.info.tile_size, self.stride)
        wanted = task.batch_size
        batch = estimate.largest_batch(self.limit, wanted)
        if self.policy == "skip" and batch < wanted:
            batch = 0
        if batch >= 1 and batch < wanted:
            task.shrunk_from, task.batch_size = wanted, batch
        task.estimate_mb = round(estimate.total(batch or wanted) / 2**20, 1)
        return batch >= 1
