"""``hpcnas search|train --plan``: what a run will cost, measured on this machine before it starts.

The network's parameters, the estimated peak memory of a training step (:mod:`hpcnas.train.memory`),
and the seconds per step from a few real steps after a warm-up, with the time of a validation batch:
enough to see that a config will need 5 GB and an hour per epoch before a job waits in a queue for it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from hpcnas.progress import clock
from hpcnas.train.complexity import count_parameters
from hpcnas.train.memory import estimate_training_memory

TIMED_STEPS = 3


@dataclass
class RunPlan:
    """What one run will cost: sizes estimated, times measured."""

    what: str  # e.g. "search darts_unet on cpu (fp32)"
    parameters: int
    memory_bytes: int
    batch: int
    tile: int
    step_s: float  # median of the timed steps
    steps_per_epoch: int
    epochs: int
    val_every: int
    val_batches: int
    val_batch_s: Optional[float]
    step_note: str = ""

    @property
    def validation_s(self) -> float:
        return self.val_batches * (self.val_batch_s or 0.0)

    @property
    def total_s(self) -> float:
        validations = -(-self.epochs // self.val_every) if self.val_batches else 0
        return self.epochs * self.steps_per_epoch * self.step_s + validations * self.validation_s

    def summary(self) -> str:
        """One line, for the first lines of a run's log."""
        return f"{self.parameters:,} parameters, about {self.memory_bytes / 2**20:,.0f} MB peak per training step"

    def lines(self) -> List[str]:
        """The plan as ``hpcnas ... --plan`` prints it."""
        val = (
            f" + {self.validation_s:.1f} s of validation ({self.val_batches} batches)"
            if self.val_batches and self.val_batch_s is not None
            else ""
        )
        every = "every epoch" if self.val_every == 1 else f"every {self.val_every} epochs and the last"
        return [
            f"plan: {self.what}, batch {self.batch} of {self.tile} px tiles",
            f"  network     {self.parameters:,} parameters",
            f"  memory      about {self.memory_bytes / 2**20:,.0f} MB peak per training step (estimated: weights, "
            "gradients, momentum, saved activations)",
            f"  step        {self.step_s:.3g} s (median of {TIMED_STEPS} timed steps after a warm-up{self.step_note})",
            f"  epoch       {self.steps_per_epoch * self.step_s:.1f} s of training ({self.steps_per_epoch} steps){val}",
            f"  whole run   about {clock(self.total_s)} for {self.epochs} epochs (validation {every})",
        ]


def memory_estimate(model: torch.nn.Module, in_channels: int, tile: int, stride: int, batch: int) -> int:
    """Estimated peak bytes of one training step of ``model`` at ``batch`` tiles of ``tile`` pixels."""
    return estimate_training_memory(model, in_channels, tile, stride).total(batch)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(loop, epoch: int, device: torch.device, steps: int = TIMED_STEPS) -> float:
    """Median seconds of ``steps`` real training steps of an :class:`~hpcnas.train.loop.EpochLoop` in ``epoch``,
    after one warm-up step (allocations, first-call overheads).  The loop is changed: use a throw-away one."""
    batches = _cycle(lambda: iter(loop.epoch_batches(epoch, 0)))
    loop.begin_epoch(epoch)
    loop.model.train()
    loop.train_step(epoch, next(batches))
    times = []
    for _ in range(steps):
        batch = next(batches)
        _synchronize(device)
        start = time.perf_counter()
        loop.train_step(epoch, batch)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def time_validation_batch(loop, device: torch.device) -> Optional[float]:
    """Seconds of one validation batch (the faster of the first two), or None without a validation split."""
    if loop.val_loader is None:
        return None
    loop.model.eval()
    times = []
    for k, (images, _) in enumerate(loop.val_loader):
        _synchronize(device)
        start = time.perf_counter()
        loop.model(images.to(device))
        _synchronize(device)
        times.append(time.perf_counter() - start)
        if k == 1:
            break
    loop.model.train()
    return min(times)


def _cycle(start: Callable):
    """Batches without end: a loader with fewer batches than the timed steps starts again."""
    while True:
        yielded = False
        for batch in start():
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the training split has no batch")


def measure_plan(
    loop,
    what: str,
    in_channels: int,
    tile: int,
    stride: int,
    batch: int,
    val_every: int,
    timed_epoch: int = 0,
    step_note: str = "",
) -> RunPlan:
    """Size a throw-away loop's network and time its steps (``timed_epoch``: which epoch's steps to time)."""
    memory = memory_estimate(loop.model, in_channels, tile, stride, batch)
    step_s = time_steps(loop, timed_epoch, loop.device)
    return RunPlan(
        what=what,
        parameters=count_parameters(loop.model),
        memory_bytes=memory,
        batch=batch,
        tile=tile,
        step_s=step_s,
        steps_per_epoch=loop.steps_per_epoch,
        epochs=loop.epochs,
        val_every=val_every,
        val_batches=len(loop.val_loader) if loop.val_loader is not None else 0,
        val_batch_s=time_validation_batch(loop, loop.device),
        step_note=step_note,
    )
