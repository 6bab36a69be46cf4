"""Pieces shared by the supernet search and the retraining loop."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import nn

from hpcnas.board import Board
from hpcnas.checkpoint import load_checkpoint, save_checkpoint
from hpcnas.distributed import SingleProcess
from hpcnas.errors import Interrupted, UserError, warn
from hpcnas.progress import progress
from hpcnas.run import Heartbeat, Run, as_run
from hpcnas.rundir import JsonlWriter, RunDir, atomic_write_text, read_jsonl_text, remove_stale_temporaries
from hpcnas.runtime import peak_memory_mb, reset_peak_memory, restore_rng_state, rng_state
from hpcnas.train.metrics import confusion, summarize

log = logging.getLogger("hpcnas")


def cosine_sgd(
    params: Iterable[nn.Parameter],
    lr: float,
    momentum: float,
    weight_decay: float,
    epochs: int,
    lr_min: float,
    wrap: Optional[Callable] = None,
) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum, cosine-annealed from ``lr`` to ``lr_min`` over ``epochs`` (paper section 5).

    ``wrap`` (Horovod's DistributedOptimizer) is applied before the schedule is attached: the
    schedule must drive the optimizer that steps, whose param groups a checkpoint load replaces.
    """
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if wrap is not None:
        opt = wrap(opt)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr_min)


@torch.no_grad()
def evaluate_confusion(
    model: nn.Module,
    loader,
    device: torch.device,
    num_classes: int,
    after_batch: Optional[Callable[[int], None]] = None,
) -> np.ndarray:
    """Summed confusion matrix of the model's argmax predictions over a loader (any iterable of batches).

    ``after_batch(index)`` is called after each batch (the heartbeat, the stop flag; it may raise)."""
    was_training = model.training
    model.eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    try:
        for k, (images, masks) in enumerate(loader):
            pred = model(images.to(device)).argmax(1).cpu().numpy()
            conf += confusion(pred, masks.numpy(), num_classes)
            if after_batch is not None:
                after_batch(k)
    finally:
        model.train(was_training)
    return conf


class StopWhileValidating(Exception):
    """Raised out of a validation when the ranks agreed to stop; the loop checkpoints and interrupts."""


STOP_CHECK_STEPS = 10  # on several ranks: steps between two agreements on a stop signal (SLURM warns minutes ahead)


class EpochLoop:
    """Epochs of steps, each epoch followed by validation, one metrics line and a checkpoint.

    Subclasses set ``model``, ``optimizers`` (name -> optimizer), ``sched``,
    ``val_loader``, ``epochs`` and ``steps_per_epoch`` (and may set
    ``val_every``: validate every this many epochs, and the last), and define
    :meth:`epoch_batches`, :meth:`train_step` and :meth:`epoch_summary`; they
    may add per-epoch fields (:meth:`epoch_extras`), restrict which epochs may
    become the best checkpoint (:meth:`may_be_best`) and carry more state
    (:meth:`extra_state` / :meth:`load_extra_state`).

    A resumed loop restores every parameter, optimizer, scheduler and RNG, so
    it ends exactly like an uninterrupted one on CPU.  SIGUSR2 / SIGTERM stop
    it between two steps: every rank agrees on the step (one tiny allreduce
    every ``STOP_CHECK_STEPS`` steps on several ranks), rank 0 saves a
    mid-epoch checkpoint (step index, running sums, RNG) and
    :class:`~hpcnas.errors.Interrupted` is raised; the resumed epoch
    skips the batches already trained, so no finished step is lost or redone.
    Validation checks the flag after every batch (several ranks: every
    ``STOP_CHECK_STEPS`` batches that all of them have); a stop there saves
    the epoch as trained but not validated, and the resume validates it.
    """

    model: nn.Module
    optimizers: dict
    sched: torch.optim.lr_scheduler.LRScheduler
    val_loader: object
    epochs: int
    steps_per_epoch: int
    val_every: int = 1

    def __init__(self, run: "Run | Path", device: torch.device, class_names, ctx=None):
        self.opened_run = as_run(run)  # a bare folder (an evaluation's): no heartbeat, this process's stop flag
        self.run_dir, self.device, self.class_names = self.opened_run.path, device, list(class_names)
        self.heart: Optional[Heartbeat] = None
        self.board: Optional[Board] = None
        self.monitor = None  # the config's monitor section (set by subclasses): TensorBoard and its images
        self.ctx = ctx or SingleProcess()
        self.start_epoch = 0
        self.best_miou = -1.0
        self.resume_step, self.resume_sums, self.resume_rng = 0, {}, None  # set by a mid-epoch checkpoint
        self.resume_record: Optional[dict] = None  # the metrics line of the epoch a restored checkpoint ended
        self.stop = self.opened_run.stop
        self.epoch_sums: Dict[str, float] = {}  # the summed step values of the epoch being finished
        self.stopped_early = False  # set by stop_early(); checkpointed by subclasses that stop early

    # -- hooks ---------------------------------------------------------------

    def epoch_batches(self, epoch: int, first_step: int) -> Iterator:
        """The batches of ``epoch`` from step ``first_step`` on (set the samplers' epoch and skip)."""
        raise NotImplementedError

    def train_step(self, epoch: int, batch) -> Dict[str, float]:
        """One optimization step; returns values to sum over the epoch."""
        raise NotImplementedError

    def epoch_summary(self, epoch: int, sums: Dict[str, float], steps: int) -> dict:
        """The fields to log, from the epoch's summed step values."""
        raise NotImplementedError

    def epoch_extras(self) -> dict:
        """Extra fields for this epoch's metrics line."""
        return {}

    def may_be_best(self, epoch: int) -> bool:
        """Whether this epoch may become the best checkpoint."""
        return True

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch's steps (also when resumed inside it)."""

    def stop_early(self, epoch: int, record: dict) -> bool:
        """Whether the run ends after this epoch, its metrics line given (an early-stopping rule)."""
        return False

    def extra_state(self) -> dict:
        """More state to checkpoint (a subclass's own RNGs, say)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Inverse of :meth:`extra_state`."""

    def best_state(self) -> dict:
        """What the best checkpoint holds besides the model weights."""
        return {}

    def check_replicas(self) -> None:
        """Raise if ranks hold different values where they must agree (called every 50 steps and every epoch)."""

    def write_board(self, epoch: int, record: dict) -> None:
        """TensorBoard (rank 0): the epoch's numbers, and every ``images_every`` epochs a few validation tiles."""
        assert self.board is not None and self.monitor is not None
        self.board.scalars(
            {k: v for k, v in record.items() if k not in ("epoch", "ranks", "genotype")}, epoch + 1, prefix="epoch"
        )
        every = self.monitor.images_every
        if every and ((epoch + 1) % every == 0 or epoch + 1 == self.epochs):
            for k, rgb in enumerate(self.example_images(self.monitor.images)):
                self.board.image(f"validation/{k}", rgb, epoch + 1)

    def example_images(self, count: int) -> list:
        """Up to ``count`` validation tiles as RGB arrays: image | truth | prediction, side by side."""
        if self.val_loader is None:
            return []
        out = []
        self.model.eval()
        with torch.no_grad():
            for x, y in self.val_loader:
                pred = self.model(x.to(self.device)).argmax(1).cpu().numpy()
                for image, truth, guess in zip(x.numpy(), y.numpy(), pred):
                    out.append(side_by_side(image, truth, guess))
                    if len(out) == count:
                        return out
        return out

    # -- state ---------------------------------------------------------------

    def state(
        self, epoch: int, step: int = 0, sums: Optional[Dict[str, float]] = None, record: Optional[dict] = None
    ) -> dict:
        """Everything an exact resume needs: after ``epoch`` finished (with its metrics line, ``record``), or
        after ``step`` steps of it."""
        return {
            "epoch": epoch,
            "step": step,
            "sums": dict(sums or {}),
            "record": record,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "sched": self.sched.state_dict(),
            "rng": rng_state(),
            "best_miou": self.best_miou,
            "extra": self.extra_state(),
        }

    def restore(self, path) -> None:
        """Load a checkpoint written by :meth:`state`; continue after its epoch, or inside it."""
        state = load_checkpoint(path, self.device)
        try:
            self.model.load_state_dict(state["model"])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(
                f"checkpoint does not match the configured model ({str(exc).splitlines()[0][:200]})", source=str(path)
            ) from None
        self.sched.load_state_dict(state["sched"])
        restore_rng_state(state["rng"])
        self.load_extra_state(state["extra"])
        self.best_miou = state["best_miou"]
        self.resume_record = state.get("record")
        if state.get("step"):  # stopped inside the epoch
            self.start_epoch, self.resume_step, self.resume_sums, self.resume_rng = (
                state["epoch"],
                state["step"],
                state["sums"],
                state["rng"],
            )
        else:
            self.start_epoch = state["epoch"] + 1

    def resume_point(self) -> str:
        """Where a restored loop continues, for the log (epochs counted from 1, as everywhere)."""
        return f"epoch {self.start_epoch + 1}" + (f", after step {self.resume_step}" if self.resume_step else "")

    # -- loop ----------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict:
        """Train one epoch (the rest of it, when resumed inside it); return the fields to log."""
        self.model.train()
        first, sums = 0, {}
        if epoch == self.start_epoch and self.resume_step:
            first, sums = self.resume_step, dict(self.resume_sums)
        batches = iter(self.epoch_batches(epoch, first))
        if first:  # creating the loaders' iterators drew from the RNG: be where the interrupted run was
            restore_rng_state(self.resume_rng)
        steps = self.steps_per_epoch
        self.data_wait_s = 0.0
        shown = progress(range(first, steps), steps - first, f"epoch {epoch + 1}", self.ctx.is_root, unit="steps")
        for step in shown:
            waited = time.perf_counter()
            batch = next(batches)  # the time the step waits for data (decoding, augmentation, workers)
            self.data_wait_s += time.perf_counter() - waited
            values = self.train_step(epoch, batch)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            if self.heart is not None:
                self.heart.beat(epoch=epoch + 1, epochs=self.epochs, step=step + 1, steps=steps)
            if self.board is not None:
                self.board.scalars(values, epoch * steps + step + 1, prefix="step")
            if step % 50 == 49:
                self.check_replicas()
            if step + 1 < steps and self._stop_check(step) and self.ctx.any(self.stop.requested):
                if self.ctx.is_root:
                    save_checkpoint(RunDir(self.run_dir).latest, self.state(epoch, step + 1, sums))
                raise Interrupted(
                    self.run_dir,
                    self.stop.signal or "another rank's signal",
                    f"in epoch {epoch + 1} after step {step + 1}/{steps}",
                )
        self.epoch_sums = sums
        return self.epoch_summary(epoch, sums, steps)

    def _stop_check(self, step: int) -> bool:
        """Whether the ranks agree on a stop after this step: every step alone; on several ranks every
        ``STOP_CHECK_STEPS`` (one allreduce each time; every rank counts the same steps, so all agree)."""
        return self.ctx.size == 1 or (step + 1) % STOP_CHECK_STEPS == 0

    def validation_due(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is validated: every ``val_every`` epochs, and always the last."""
        return (epoch + 1) % self.val_every == 0 or epoch + 1 == self.epochs

    def validate(self, loader=None, desc: str = "validate", show: bool = True) -> dict:
        """``val_miou`` and per-class ``val_iou_*`` on ``loader`` (default the validation loader; nothing when
        there is no validation split).  Reports progress (a bar when ``show``), and raises
        :class:`StopWhileValidating` when the ranks agree on a stop."""
        loader = self.val_loader if loader is None else loader
        if loader is None:
            return {}
        shown = progress(loader, len(loader), desc, enabled=self.ctx.is_root and show, unit="batches")
        try:
            # summed intersections and unions over every rank's shard, not averaged mIoUs
            conf = self.ctx.sum(
                evaluate_confusion(self.model, shown, self.device, len(self.class_names), self.batch_guard(loader))
            )
        finally:
            if self.heart is not None:
                self.heart.beat(phase=None, val_batch=None, val_batches=None)
        return {f"val_{k}": v for k, v in summarize(conf, self.class_names).items()}

    def batch_guard(self, loader) -> Callable[[int], None]:
        """What runs after each batch of a pass over a validation ``loader``: the heartbeat, and the stop check
        (several ranks: every ``STOP_CHECK_STEPS`` batches that all of them have), which raises
        :class:`StopWhileValidating`."""
        batches = len(loader)
        common = getattr(loader, "common_batches", batches)  # the batches every rank has

        def after_batch(k: int) -> None:
            if self.heart is not None:
                self.heart.beat(phase="validating", val_batch=k + 1, val_batches=batches)
            check = self.ctx.size == 1 or ((k + 1) % STOP_CHECK_STEPS == 0 and k < common)
            if check and self.ctx.any(self.stop.requested):
                raise StopWhileValidating()

        return after_batch

    def run_epochs(self) -> None:
        """Run from ``start_epoch`` to ``epochs``; metrics.jsonl and checkpoints as it goes."""
        root = self.ctx.is_root  # only rank 0 writes metrics, checkpoints and logs
        metrics_path = RunDir(self.run_dir).metrics
        if root:
            self.reconcile_metrics(metrics_path)
            remove_stale_temporaries(self.run_dir)  # a kill midway through a checkpoint's write left one
        metrics = JsonlWriter(metrics_path) if root else None
        self.heart = self.opened_run.heart  # rank 0 of a command's own run (not a discrete search's evaluation)
        if self.heart is not None and self.monitor is not None and self.monitor.tensorboard:
            self.board = Board(RunDir(self.run_dir).tb, background=True)  # a step only queues its scalars
        try:
            with self.stop:
                for epoch in range(self.start_epoch, self.epochs):
                    if self.stopped_early:
                        break
                    self._run_epoch(epoch, metrics)
                    if self.stopped_early:
                        break
                    if epoch + 1 < self.epochs and self.ctx.any(self.stop.requested):
                        raise Interrupted(
                            self.run_dir, self.stop.signal or "another rank's signal", f"after epoch {epoch + 1}"
                        )
        finally:
            if metrics is not None:
                metrics.close()
            if self.board is not None:
                self.board.close()

    def reconcile_metrics(self, path: Path) -> None:
        """Make metrics.jsonl hold exactly the epochs the checkpoint holds, saying so when a kill left it otherwise.

        The checkpoint is the commit point of an epoch: it is written first, with the epoch's metrics line inside,
        and the line is appended after. A kill between the two leaves the line missing or cut off: it is
        restored from the checkpoint. Lines past the checkpoint (an older hpcnas wrote the line first) are
        dropped: those epochs run again.
        """
        text = path.read_text() if path.exists() else ""
        complete, _, cut = text.rpartition("\n") if "\n" in text else ("", "", text)
        records = read_jsonl_text(complete)
        keep = self.start_epoch
        if cut.strip():
            last = len(records) + 1
            fate = "restored from the checkpoint" if self.resume_record and last == keep else f"epoch {last} runs again"
            warn(f"{path}: the line of epoch {last} was cut off by a kill: {fate}")
        if len(records) > keep:
            warn(f"{path}: epochs {keep + 1}-{len(records)} are logged past the checkpoint: dropped, they run again")
        elif len(records) == keep - 1 and self.resume_record is not None:
            if not cut.strip():
                warn(f"{path}: the line of epoch {keep} was missing (a kill after its checkpoint): restored from it")
            records.append(self.resume_record)
        elif len(records) < keep:
            warn(f"{path}: epochs {len(records) + 1}-{keep} are not logged, and the checkpoint holds no copy")
        reconciled = "".join(json.dumps(r) + "\n" for r in records[:keep])
        if reconciled != text:
            atomic_write_text(path, reconciled)

    def _run_epoch(self, epoch: int, metrics: Optional[JsonlWriter]) -> None:
        t0 = time.time()
        reset_peak_memory(self.device)
        self.begin_epoch(epoch)
        record = {"epoch": epoch + 1, "lr": self.sched.get_last_lr()[0]}  # 1-based, as the log and the configs count
        count0, seconds0 = self.ctx.collectives()
        record.update(self.train_epoch(epoch))
        record["train_s"] = round(time.time() - t0, 3)
        record["data_wait_s"] = round(self.data_wait_s, 3)  # of train_s, waiting for batches
        if self.ctx.size > 1:  # what data parallelism costs the step: blocking collectives and the wait in them
            count, seconds = self.ctx.collectives()
            steps = max(record.get("steps", 1), 1)
            record["collectives_per_step"] = round((count - count0) / steps, 1)
            record["collective_wait_s"] = round(seconds - seconds0, 3)  # of train_s
        if self.validation_due(epoch):
            before = rng_state()  # the validation loader's iterator draws from it: a resume starts here again
            try:
                record.update(self.validate(desc=f"validate epoch {epoch + 1}"))
            except StopWhileValidating:
                if self.ctx.is_root:  # the epoch as trained, not yet validated nor scheduled: the resume does both
                    state = self.state(epoch, self.steps_per_epoch, self.epoch_sums)
                    save_checkpoint(RunDir(self.run_dir).latest, {**state, "rng": before})
                raise Interrupted(
                    self.run_dir,
                    self.stop.signal or "another rank's signal",
                    f"in epoch {epoch + 1} while validating (its steps are saved)",
                ) from None
        self.sched.step()  # after validation, so a stop while validating saves the epoch's own schedule
        self.check_replicas()
        record.update(self.epoch_extras())
        record.update(
            {
                "time_s": round(time.time() - t0, 3),
                "peak_memory_mb": round(peak_memory_mb(self.device), 1),
                "ranks": self.ctx.size,
                "device": str(self.device),
            }
        )
        self.stopped_early = self.stop_early(epoch, record)
        if self.stopped_early:
            record["stopped_early"] = True
        improved = self.may_be_best(epoch) and record.get("val_miou", -1.0) > self.best_miou
        if improved:
            self.best_miou = record["val_miou"]
        if metrics is None:
            return
        # the commit order that makes a kill at any instant resumable: best.pt (redone identically if the epoch
        # runs again), then latest.pt, the commit point, which carries the metrics line, then the line itself
        if improved:
            save_checkpoint(
                RunDir(self.run_dir).best,
                {"epoch": epoch, "model": self.model.state_dict(), "val_miou": self.best_miou, **self.best_state()},
            )
        save_checkpoint(RunDir(self.run_dir).latest, self.state(epoch, record=record))
        metrics.write(record)
        if self.board is not None:
            self.write_board(epoch, record)
        val = f"{record['val_miou']:.4f}" if "val_miou" in record else "n/a" if self.val_loader is None else "-"
        log.info(
            "epoch %d/%d  loss %.4f  val mIoU %s%s  %.1fs",
            epoch + 1,
            self.epochs,
            record["train_loss"],
            val,
            " *" if improved else "",
            record["time_s"],
        )


CLASS_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)  # class 0 (background) black; ids beyond the table wrap around


def side_by_side(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(C, H, W) image in [0, 1] and two (H, W) class maps -> one (H, 3W + 4, 3) uint8 picture."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo, hi = float(rgb.min()), float(rgb.max())
    rgb = ((rgb - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8).transpose(1, 2, 0)
    gap = np.full((rgb.shape[0], 2, 3), 255, dtype=np.uint8)
    colour = lambda labels: CLASS_COLOURS[np.clip(labels, 0, None) % len(CLASS_COLOURS)]  # noqa: E731
    return np.concatenate([rgb, gap, colour(truth), gap, colour(pred)], axis=1)
