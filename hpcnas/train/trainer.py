"""Retraining a discrete network: a decoded genotype, a random cell, or the ResNet-UNet baseline.

SGD with the cosine schedule and the weighted cross-entropy, train-time
flips/rot90, N epochs; the best checkpoint by validation mIoU counted from
``train.select_from_epoch`` (paper: from the 30th of 80, counted from 1).
Checkpoints carry the model spec (:mod:`hpcnas.train.spec`), so ``evaluate``
rebuilds the network from the file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from hpcnas.config import Config
from hpcnas.data.hdf5 import DatasetInfo
from hpcnas.data.torch_dataset import SegmentationDataset, make_loader, validation_loader
from hpcnas.errors import Interrupted, UserError
from hpcnas.run import Run
from hpcnas.rundir import RunDir, write_json
from hpcnas.runtime import ComputeFormat, seed_everything
from hpcnas.train.loop import EpochLoop, StopWhileValidating, cosine_sgd, log
from hpcnas.train.losses import make_loss
from hpcnas.train.spec import ModelSpec


class Trainer(EpochLoop):
    """Train one discrete network in one run directory."""

    def __init__(
        self,
        cfg: Config,
        run: "Run | Path",
        data_path: str,
        info: DatasetInfo,
        device: torch.device,
        spec: ModelSpec,
        epoch_done: Optional[Callable[[int, float], bool]] = None,
    ):
        """``epoch_done(epochs, best mIoU so far)`` is asked after every epoch whether to go on (successive
        halving's rungs); the run stops early when it answers false."""
        super().__init__(run, device, info.class_names)
        self.cfg, self.spec, self.info = cfg, spec, info
        self.epoch_done = epoch_done
        self.epochs_done = 0
        self.monitor = cfg.monitor
        tr = cfg.train
        seed_everything(cfg.seed)
        self.format = ComputeFormat(device, tr.precision, tr.channels_last, key="train.")
        self.model = self.format.model(spec.build().to(device))
        train = SegmentationDataset(data_path, "train", augment=cfg.data.augment)
        if len(train) == 0:
            raise UserError("the train split is empty", source=data_path)
        self.loader = make_loader(
            train, tr.batch_size, seed=cfg.seed, num_workers=cfg.data.num_workers, drop_last=len(train) >= tr.batch_size
        )
        self.data_path = data_path
        self.val_loader = validation_loader(
            data_path, tr.batch_size, num_workers=cfg.data.num_workers, max_tiles=tr.val_max_tiles
        )
        self.val_every = tr.val_every
        self.criterion = make_loss(tr.loss, info.class_weights, device, self.ctx)
        self.opt, self.sched = cosine_sgd(
            self.model.parameters(), tr.lr, tr.momentum, tr.weight_decay, tr.epochs, tr.lr_min
        )
        self.optimizers = {"w": self.opt}
        self.epochs = tr.epochs
        self.steps_per_epoch = min(len(self.loader), tr.max_steps_per_epoch or len(self.loader))

    def may_be_best(self, epoch: int) -> bool:
        return epoch + 1 >= min(self.cfg.train.select_from_epoch, self.epochs)  # select_from_epoch counts from 1

    def best_state(self) -> Dict[str, Any]:
        return {"spec": self.spec.to_dict()}

    def stop_early(self, epoch: int, record: Dict[str, Any]) -> bool:
        self.epochs_done = epoch + 1
        if self.epoch_done is None:
            return False
        best = max(self.best_miou, record.get("val_miou", -1.0)) if self.may_be_best(epoch) else self.best_miou
        return not self.epoch_done(epoch + 1, best)

    def extra_state(self) -> Dict[str, Any]:
        return {"spec": self.spec.to_dict()}

    def epoch_extras(self) -> Dict[str, Any]:
        return {"params": self.spec.params, "flops": self.spec.flops}

    def epoch_batches(self, epoch: int, first_step: int):
        """The training batches of ``epoch`` from ``first_step`` on."""
        self.loader.sampler.set_epoch(epoch, first_step * self.cfg.train.batch_size)
        return self.loader

    def train_step(self, epoch: int, batch) -> Dict[str, float]:
        """One SGD step on the weighted cross-entropy."""
        x, y = batch
        self.opt.zero_grad(set_to_none=True)
        with self.format.autocast():
            logits = self.model(self.format.inputs(x))
        loss = self.criterion(logits.float(), y.to(self.device, non_blocking=True))
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        return {"train_loss": loss.item()}

    def epoch_summary(self, epoch: int, sums: Dict[str, float], steps: int) -> Dict[str, Any]:
        return {"train_loss": sums.get("train_loss", 0.0) / max(steps, 1), "steps": steps}

    def run(self) -> float:
        """Train to the end; returns the best validation mIoU (or -1 without a validation split)."""
        from hpcnas.checkpoint import save_checkpoint

        self.run_epochs()
        if not RunDir(self.run_dir).best.exists():  # no validation split: the last epoch stands in
            save_checkpoint(
                RunDir(self.run_dir).best,
                {"epoch": self.epochs - 1, "model": self.model.state_dict(), "val_miou": None, "spec": self.spec},
            )
        elif self.val_loader is not None and len(self.val_loader.dataset) < self.info.split_sizes.get("val", 0):
            self.validate_selected()
        return self.best_miou

    def validate_selected(self) -> None:
        """The selected checkpoint on the whole validation split (the epochs saw a capped subset):
        ``validation.json``, and a log line."""
        from hpcnas.checkpoint import load_checkpoint

        path = RunDir(self.run_dir).validation
        if path.exists():  # a resumed run that had finished it
            return
        best = load_checkpoint(RunDir(self.run_dir).best, self.device)
        self.model.load_state_dict(best["model"])
        full = validation_loader(self.data_path, self.cfg.train.batch_size, num_workers=self.cfg.data.num_workers)
        with self.stop:
            try:
                result = self.validate(full, desc="validate the selected checkpoint (whole split)")
            except StopWhileValidating:
                raise Interrupted(
                    self.run_dir, self.stop.signal or "a signal", "while validating the selected checkpoint"
                ) from None
        assert full is not None
        record = {"epoch": best["epoch"] + 1, "tiles": len(full.dataset), **result}
        write_json(path, record)
        log.info(
            "selected checkpoint (epoch %d): val mIoU %.4f on the whole split (%d tiles; %.4f on the capped subset)",
            record["epoch"],
            record.get("val_miou", float("nan")),
            record["tiles"],
            best["val_miou"],
        )
