"""The worker child process: trains one genotype per task, reports one result record per task.

Started by :class:`hpcnas.execution.slot.WorkerSlot` with ``python -m
hpcnas.execution.worker``; reads one JSON task per line on stdin and writes
one JSON result per line on its original stdout (anything else printed goes
to stderr, the rank's log).  torch is imported at the first task and kept, so
a child serves many tasks; after a failure it exits and the slot starts a
fresh one (a CUDA context after an OOM or an error is not to be trusted).

Statuses: ``ok``; ``stopped`` (at a rung, told so by rank 0); ``oom`` (CUDA or
host allocator out of memory); ``crashed`` (any other exception here; a signal or
an exit is classified by the slot).

Every line is a typed message of :mod:`hpcnas.records` (``encode``/``decode``). Besides
results, the child writes once at start-up a :class:`DeviceInfo` (for
``evolve.memory.limit: auto``), and after each rung of a task with rungs a
:class:`RungReport`, after which it waits for a :class:`Decision` on stdin, its
model and optimizer kept in memory meanwhile.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, List, TextIO, Tuple

from hpcnas.plugins import EVALUATORS, OBJECTIVES, in_range
from hpcnas.records import (
    Decision,
    DeviceInfo,
    Result,
    RungReport,
    Status,
    Task,
    WorkerSetup,
    receive,
    send,
)
from hpcnas.rundir import RunDir
from hpcnas.space.genotype import Genotype

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "outofmemory")


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is an allocator failure (CUDA or host)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__.lower()
    text = str(exc).lower()
    return "outofmemory" in name or any(m in text for m in OOM_MARKERS)


def inject(fault: str, device) -> None:
    """A real fault, on purpose: for fault-tolerance drills and tests."""
    import signal

    if fault == "oom":
        import torch

        torch.empty(2**44, dtype=torch.uint8, device=device)  # 16 TiB: the real allocator refuses
    elif fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang":
        while True:
            time.sleep(60)
    elif fault == "error":
        raise RuntimeError("injected failure")


def _device(local_rank: int):
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def measure_latency(model, in_channels: int, size: int, device, runs: int, warmup: int = 3) -> float:
    """Median milliseconds of one eval-mode forward pass of a (1, C, size, size) input, after ``warmup`` passes."""
    import torch

    from hpcnas.train.complexity import median_forward_ms

    return median_forward_ms(model, torch.zeros(1, in_channels, size, size, device=device), runs, warmup)


def host_memory_bytes() -> int:
    """This node's memory, or the control group's limit when smaller (SLURM confines jobs with cgroups)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


ReportRung = Callable[[int, float], bool]  # (epochs done, fitness so far) -> whether to go on


def never_stop(epochs: int, fitness: float) -> bool:
    """The rung report of a task without rungs."""
    return True


class Evaluator:
    """How a worker child turns a task into a result; registered by name for ``evolve.evaluator.name``."""

    name = ""

    @dataclass
    class Options:
        """The evaluator's own settings in ``evolve.evaluator`` (beside the shared ones: ``proxy_epochs``...),
        checked when the config is loaded; a subclass with settings declares its own."""

    def __init__(self, setup: WorkerSetup):
        self.setup = setup
        self.options = self.Options(**setup.evaluator_options)  # what the orchestrator's config checked

    def device_memory(self) -> int:
        """Bytes one evaluation may use: the node's memory shared by its ranks (a GPU's own, in subclasses)."""
        return host_memory_bytes() // max(self.setup.local_size, 1)

    def evaluate(self, task: Task, report: ReportRung = never_stop) -> Result:
        """Evaluate one task; raise on failure (the caller classifies the exception).

        After each of ``task.rungs`` epochs, call ``report(epochs, fitness)`` and stop when it answers false.
        """
        raise NotImplementedError


class TrainEvaluator(Evaluator):
    """Proxy-train the task's genotype; the fitness is the best validation mIoU; measure its costs."""

    name = "train"

    def __init__(self, setup: WorkerSetup):
        super().__init__(setup)
        import torch  # here, in the child, while the slot waits for its first task

        if setup.threads:
            torch.set_num_threads(int(setup.threads))
        self.scorer = None  # zero-cost scores, made at the first task that records them
        self.base: Any = None  # (config, data info): read once, at the first task
        self.metrics: List[Tuple[Any, Any]] = []  # the plugin objectives measured here, with their options

    @staticmethod
    def plugin_metrics(cfg) -> List[Tuple[Any, Any]]:
        """``(metric, options)`` of each of the search's objectives that this child measures itself (a plugin's
        ``measure``)."""
        from hpcnas.config import measure_options
        from hpcnas.strategies.objectives import parse_objectives

        metrics = [OBJECTIVES[o.name] for o in parse_objectives(cfg.evolve.objectives)]
        return [(m, measure_options(cfg, m.name)) for m in metrics if m.measure is not None]

    def config_and_info(self, batch_size: int) -> Tuple[Any, Any]:
        """The run's config as a proxy training of ``batch_size`` (a task's, shrunk when memory is short) and the
        data set's info; the files are read at the first task only."""
        import dataclasses

        from hpcnas.config import load_config
        from hpcnas.data.hdf5 import read_info

        setup = self.setup
        if self.base is None:
            proxy = [f"train.epochs={setup.proxy_epochs}", "train.select_from_epoch=0"]
            cfg = load_config(setup.config, proxy)
            self.base = (cfg, read_info(setup.data))
            self.metrics = self.plugin_metrics(cfg)
        cfg, info = self.base
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size)), info

    def device_memory(self) -> int:
        import torch

        device = _device(self.setup.local_rank)
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return super().device_memory()

    def evaluate(self, task: Task, report: ReportRung = never_stop) -> Result:
        from hpcnas.runtime import peak_memory_mb, reset_peak_memory
        from hpcnas.strategies.objectives import Trained
        from hpcnas.train.spec import model_spec
        from hpcnas.train.trainer import Trainer
        from hpcnas.train.zero_cost import GenotypeScorer

        setup = self.setup
        device = _device(setup.local_rank)
        if task.fault:
            inject(task.fault, device)
        cfg, info = self.config_and_info(task.batch_size)
        spec = model_spec(cfg, info, task.genotype)
        eval_dir = RunDir(setup.run_dir).eval_dir(task.id)
        shutil.rmtree(eval_dir, ignore_errors=True)  # a re-queued task starts clean
        scores = {}
        if setup.zero_cost:  # every score at initialization, on evolve.prescreen.batch patches read once
            if self.scorer is None:
                self.scorer = GenotypeScorer(cfg, setup.data, None, cfg.evolve.prescreen.batch, device)
            scores = self.scorer.scores(spec)
        rungs, reported = set(task.rungs), {}

        def at_rung(epochs: int, fitness: float) -> bool:
            if epochs not in rungs:
                return True
            reported[str(epochs)] = fitness
            return report(epochs, fitness)

        trainer = Trainer(cfg, eval_dir, setup.data, info, device, spec, epoch_done=at_rung)
        reset_peak_memory(device)
        best = trainer.run()
        if not setup.keep_checkpoints:
            shutil.rmtree(RunDir(eval_dir).checkpoints, ignore_errors=True)
        measured = {  # the model spec counted them once, on the meta device, before training
            "params": float(spec.params),
            "flops": float(spec.flops),
            "peak_memory": round(peak_memory_mb(device), 1),
        }
        if setup.latency_runs:
            measured["latency"] = round(
                measure_latency(trainer.model, info.channels, info.tile_size, device, setup.latency_runs), 3
            )
        for metric, options in self.metrics:
            measured[metric.name] = float(metric.measure(Trained(trainer.model, info, device, options)))
        return Result(
            task.id,
            Status.STOPPED if trainer.stopped_early else Status.OK,
            fitness=best if best >= 0 else None,
            measured=measured,
            epochs=trainer.epochs_done,
            rungs=reported,
            scores=scores,
        )


def kernel_cost(genotype: Genotype) -> float:
    """A stand-in for a parameter count that needs no torch: the summed squared kernel sizes of the genotype's ops."""
    ops = [op for _, nodes in genotype.cells for node in nodes for op, _ in node]
    return float(
        sum(25 if "5x5" in op or op.endswith("_3") else 9 if "3x3" in op or op.endswith("_2") else 1 for op in ops)
    )


def sleep_seconds(rng: random.Random, median: float, sigma: float) -> float:
    """A log-normal task time (the sleep evaluator's; the DeepHyper anchor of the orchestrator benchmark draws the
    same ones from the same seeds)."""
    return median * math.exp(sigma * rng.gauss(0, 1))


class SleepEvaluator(Evaluator):
    """The benchmarking evaluator: sleep a log-normal time; a seeded random fitness, a cost from the genotype."""

    name = "sleep"

    @dataclass
    class Options:
        sleep_median: float = field(default=1.0, metadata=in_range(0.0))  # seconds
        sleep_sigma: float = field(default=0.5, metadata=in_range(0.0))  # the log-normal's shape

    def evaluate(self, task: Task, report: ReportRung = never_stop) -> Result:
        """The duration is spread over ``proxy_epochs`` epochs; at a rung the fitness so far is the final one
        plus noise that shrinks as the epochs go (a noisy but informative early estimate)."""
        rng = random.Random(task.id)
        duration = sleep_seconds(rng, self.options.sleep_median, self.options.sleep_sigma)
        fitness = rng.random()
        if task.fault in ("kill", "hang", "error"):
            inject(task.fault, None)
        epochs, reported = self.setup.proxy_epochs, {}
        for epoch in range(1, epochs + 1):
            time.sleep(duration / epochs)
            if epoch in task.rungs:
                reported[str(epoch)] = fitness + rng.gauss(0, 0.1) * (1 - epoch / epochs)
                if not report(epoch, reported[str(epoch)]):
                    return Result(task.id, Status.STOPPED, fitness=max(reported.values()), epochs=epoch, rungs=reported)
        return Result(
            task.id,
            Status.OK,
            fitness=fitness,
            measured={"params": kernel_cost(task.genotype)},
            epochs=epochs,
            rungs=reported,
        )


def _exit_with_parent() -> None:
    """The child dies when its rank does (the rank may be SIGKILLed with everything in flight)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


class RungChannel:
    """A task's rung reports to the rank, and the rank's answers; the time spent waiting is kept."""

    def __init__(self, task_id: int, results: TextIO, answers: TextIO):
        self.task_id, self.results, self.answers = task_id, results, answers
        self.paused = 0.0

    def __call__(self, epochs: int, fitness: float) -> bool:
        t0 = time.time()
        send(self.results, RungReport(self.task_id, epochs, fitness))
        message = receive(self.answers)
        self.paused += time.time() - t0
        if message is None:  # the rank closed our input: it is going away
            raise SystemExit(0)
        assert isinstance(message, Decision), message
        return message.go_on


def main() -> int:
    """Serve tasks from stdin until it closes."""
    setup = WorkerSetup.from_dict(json.loads(sys.argv[1]))
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints from libraries go to the log, not into the result stream
    _exit_with_parent()
    evaluator = EVALUATORS[setup.evaluator](setup)
    send(results, DeviceInfo(evaluator.device_memory()))
    while True:
        task = receive(sys.stdin)
        if task is None:
            return 0
        assert isinstance(task, Task), task
        start = time.time()
        channel = RungChannel(task.id, results, sys.stdin)
        try:
            result = evaluator.evaluate(task, channel)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a result
            if isinstance(exc, SystemExit):
                raise
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            result = Result(task.id, Status.OOM if is_oom(exc) else Status.CRASHED, error=error)
            traceback.print_exc()
        result.start, result.end, result.paused = start, time.time(), round(channel.paused, 6)
        send(results, result)
        if result.status not in (Status.OK, Status.STOPPED):
            return 3  # replaced by a fresh child


if __name__ == "__main__":
    sys.exit(main())
