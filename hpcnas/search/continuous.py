"""The supernet search loop: weights by SGD, architecture by GAEA or Adam (first order).

Per epoch: for each step, an architecture step on one batch (from
``arch_start_epoch`` on, counted from 1 as the log does), then a weight step
on another; then the supernet's validation mIoU, one metrics line, a
checkpoint.  At the end the genotype is decoded and written.

Two collapse remedies act here: DARTS-'s auxiliary skip (``search.aux_skip``,
decayed linearly to 0 over the epochs) and DARTS+'s early stop
(``search.early_stop_skips``: the search ends when the decoded decoder cell
holds that many skip connections, and the genotype of the epoch before is
kept).  P-DARTS's cap on skips is a decoding rule (``search.decode.max_skips``).
With ``search.decode.method: perturbation`` the genotype is chosen after the
last epoch by DARTS-PT's perturbation of the trained supernet
(:mod:`hpcnas.search.perturbation`), not read off theta.
Resuming restores every parameter, optimizer, scheduler
and RNG (global and channel sampling), so a killed run that is resumed ends
exactly like an uninterrupted one on CPU.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from hpcnas.config import Config
from hpcnas.data.hdf5 import DatasetInfo
from hpcnas.data.torch_dataset import SegmentationDataset, make_loader, split_indices, validation_loader
from hpcnas.errors import Interrupted, UserError, warn
from hpcnas.plugins import ARCH_OPTIMIZERS
from hpcnas.run import Run
from hpcnas.rundir import RunDir, read_jsonl, write_json
from hpcnas.runtime import ComputeFormat, seed_everything
from hpcnas.search.cost import ExpectedCost
from hpcnas.search.decode import darts_plus_stops, decode_configured
from hpcnas.search.diagnosis import unmoved_theta
from hpcnas.search.perturbation import perturbation_snapshot
from hpcnas.space.genotype import Genotype
from hpcnas.space.networks import SearchNetwork, build_search_network
from hpcnas.space.searchspace import SearchSpace
from hpcnas.space.topology import auto_blocks
from hpcnas.train.loop import EpochLoop, StopWhileValidating, cosine_sgd
from hpcnas.train.losses import WeightedCrossEntropy

log = logging.getLogger("hpcnas")

TUNE_LR_SHARE = 0.1  # perturbation selection tunes the weights at this share of search.lr (the schedule ended at 0)


def build_supernet(cfg: Config, info: DatasetInfo, device: Optional[torch.device] = None) -> SearchNetwork:
    """The configured supernet for a data set (checks the tile size against the stride)."""
    sp, se = cfg.space, cfg.search
    space = SearchSpace.from_config(cfg)
    need = space.stride()
    if info.tile_size % need:
        raise UserError(
            f"tile size {info.tile_size} is not divisible by the network stride {need} "
            f"(space.depth={sp.depth}, {sp.topology})",
            source=str(info.path),
        )
    return build_search_network(
        space,
        info.channels,
        info.num_classes,
        channels=sp.channels,
        partial=se.partial_channels,
        edge_norm=se.edge_normalization,
        arch_mode=ARCH_OPTIMIZERS[se.arch_optimizer].mode,
        seed=cfg.seed + 1,
        sampling=se.channel_sampling,
        device=device,
    )


def decode(cfg: Config, model: SearchNetwork) -> Genotype:
    """The genotype the current architecture weights stand for (without the blocks auto:K left hand-designed)."""
    genotype = decode_configured(cfg, model.arch.snapshot())
    held = model.arch.held
    if not held:
        return genotype
    return replace(genotype, cells=tuple((role, cell) for role, cell in genotype.cells if role not in held))


class SupernetSearch(EpochLoop):
    """One search run in one run directory; :meth:`run` trains, checkpoints and decodes."""

    def __init__(
        self, cfg: Config, run: "Run | Path", data_path: str, info: DatasetInfo, device: torch.device, ctx=None
    ):
        super().__init__(run, device, info.class_names, ctx)
        ctx = self.ctx
        self.cfg, self.info = cfg, info
        self.monitor = cfg.monitor
        se = cfg.search
        seed_everything(cfg.seed)
        model = build_supernet(cfg, info, device)
        self.format = ComputeFormat(device, se.precision, se.channels_last, key="search.")
        self.model = self.format.model((ctx.sync_batch_norm(model) if se.sync_batchnorm else model).to(device))
        train = SegmentationDataset(data_path, "train", augment=cfg.data.augment)
        if len(train) == 0:
            raise UserError("the train split is empty", source=data_path)
        if se.data_split == "half":
            n = len(train)
            if n < 2:
                raise UserError("search.data_split=half needs at least 2 training patches", source=data_path)
            w_set = SegmentationDataset(data_path, "train", cfg.data.augment, indices=split_indices(n, 0))
            a_set = SegmentationDataset(data_path, "train", cfg.data.augment, indices=split_indices(n, 1))
        else:
            w_set, a_set = train, train
        # se.batch_size is per rank: N ranks with batch b step like one rank with batch N*b
        shard = dict(rank=ctx.rank, world=ctx.size, num_workers=cfg.data.num_workers)
        self.w_loader = make_loader(
            w_set, se.batch_size, seed=cfg.seed, drop_last=len(w_set) >= se.batch_size * ctx.size, **shard
        )
        self.a_loader = make_loader(
            a_set, se.batch_size, seed=cfg.seed + 7919, drop_last=len(a_set) >= se.batch_size * ctx.size, **shard
        )
        self.val_loader = validation_loader(data_path, se.batch_size, max_tiles=se.val_max_tiles, **shard)
        self.val_every = se.val_every
        self.selection_loader = self.val_loader
        if se.decode.method == "perturbation":
            if self.val_loader is None:
                raise UserError(
                    "search.decode.method=perturbation measures the supernet on the validation split, which is empty",
                    source=data_path,
                )
            if se.decode.perturbation_tiles is not None:
                self.selection_loader = validation_loader(
                    data_path, se.batch_size, max_tiles=se.decode.perturbation_tiles, **shard
                )
        self.criterion = WeightedCrossEntropy(info.class_weights, device, ctx)
        arch_ids = {id(p) for p in self.model.arch_parameters()}
        self.w_params = self.model.weight_parameters()
        named = [(f"w.{n}", p) for n, p in self.model.named_parameters() if id(p) not in arch_ids]
        self.w_opt, self.sched = cosine_sgd(
            self.w_params,
            se.lr,
            se.momentum,
            se.weight_decay,
            se.epochs,
            se.lr_min,
            wrap=lambda opt: ctx.distributed_optimizer(opt, named),
        )
        self.steps_per_epoch = min(len(self.w_loader), len(self.a_loader), se.max_steps_per_epoch or len(self.w_loader))
        self.a_opt = ARCH_OPTIMIZERS[se.arch_optimizer].make(
            self.model.arch_parameters(),
            se.arch_lr,
            se.arch_weight_decay,
            movement=se.arch_movement,
            steps=(se.epochs - max(se.arch_start_epoch, 1) + 1) * self.steps_per_epoch,
        )
        self.cost = None  # FBNet's resource term, when search.cost asks for one
        if se.cost.kind is not None and se.cost.weight > 0:
            sample = torch.zeros(1, info.channels, info.tile_size, info.tile_size, device=device)
            self.cost = ExpectedCost(self.model, se.cost.kind, sample)
        self.arch_lr = self.a_opt.param_groups[0]["lr"]
        self.aux_coefficient = 0.0
        self.kept_genotype = None  # DARTS+: the genotype of the last epoch before the skips piled up
        self.optimizers = {"w": self.w_opt, "arch": self.a_opt}
        self.epochs = se.epochs
        self.auto_blocks = auto_blocks(cfg.space.searchable)  # auto:K: K blocks picked after the warm-up epoch
        ctx.broadcast_state(self.model, self.optimizers)

    def check_replicas(self) -> None:
        self.ctx.check_identical(self.model.arch_parameters(), "architecture parameters")

    def extra_state(self) -> Dict[str, Any]:
        kept = self.kept_genotype.to_dict() if self.kept_genotype is not None else None
        return {
            "channel_rng": self.model.channel_rng.get_state(),
            "kept_genotype": kept,
            "stopped_early": self.stopped_early,
            "held_blocks": dict(self.model.arch.held),
        }

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        try:
            self.model.channel_rng.set_state(state["channel_rng"])
        except RuntimeError:  # a CPU generator's state does not fit a CUDA one, nor the other way round
            log.warning(
                "the checkpoint was written on another kind of device: channel sampling starts again from its "
                "seed, so this resumed search is not bit-identical to an uninterrupted one"
            )
        kept = state.get("kept_genotype")
        self.kept_genotype = Genotype.from_dict(kept) if kept is not None else None
        self.stopped_early = state.get("stopped_early", False)
        self.model.arch.held = {str(role): int(op) for role, op in state.get("held_blocks", {}).items()}

    def arch_active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based index) takes architecture steps: from ``arch_start_epoch`` (1-based) on."""
        return epoch + 1 >= self.cfg.search.arch_start_epoch

    def begin_epoch(self, epoch: int) -> None:
        """DARTS-: the auxiliary skip decays linearly from ``aux_skip`` at the first epoch to 0 after the last."""
        self.aux_coefficient = self.cfg.search.aux_skip * (1 - epoch / self.epochs)
        self.model.set_aux_skip(self.aux_coefficient)
        if self.auto_blocks and epoch == self.cfg.search.arch_start_epoch and not self.model.arch.held:
            self.pick_blocks(self.auto_blocks)

    def pick_blocks(self, k: int) -> None:
        """``space.searchable: auto:K`` after its warm-up (the first epoch of architecture steps): the K blocks whose
        theta that epoch decided most (the lowest entropy) stay searched, every other one holds its hand-designed
        op from now on.  theta is the same on every rank, so every rank picks the same blocks."""
        arch = self.model.arch
        entropy = arch.entropies(normalized=True)
        ranked = sorted(arch.roles, key=lambda role: (entropy[role], arch.roles.index(role)))
        topology = SearchSpace.from_config(self.cfg).topology
        for role in ranked[k:]:
            cell = topology.default_cell(role)
            assert cell is not None  # auto:K is accepted only for a topology with hand-designed blocks
            arch.held[role] = arch.op_names.index(cell[0][0][0])
        log.info(
            "auto:%d after the warm-up: searching %s (theta entropy %s of uniform); %d block(s) stay hand-designed",
            k,
            ", ".join(ranked[:k]),
            ", ".join(f"{entropy[role]:.3f}" for role in ranked[:k]),
            len(ranked) - k,
        )

    def epoch_extras(self) -> Dict[str, Any]:
        genotype = decode(self.cfg, self.model)
        return {
            "entropy": self.model.arch.entropies(),
            "entropy_normalized": self.model.arch.entropies(normalized=True),
            "arch_lr": self.arch_lr,
            "arch_movement": ARCH_OPTIMIZERS[self.cfg.search.arch_optimizer].movement(
                self.cfg.search.arch_lr, self.cfg.search.arch_movement
            ),
            "aux_skip": round(self.aux_coefficient, 6),
            "genotype": genotype.to_dict(),
            "skips": genotype.skip_count(),
            "parameter_free": genotype.parameter_free_fraction(),
            **({"searched_blocks": self.model.arch.searched_roles()} if self.auto_blocks else {}),
        }

    def write_board(self, epoch: int, record: Dict[str, Any]) -> None:
        """Also the op weights of every edge (one overlay chart per edge) and the decoded genotype."""
        super().write_board(epoch, record)
        assert self.board is not None
        snap = self.model.arch.snapshot()
        ops = self.model.arch.op_names
        weights = {
            role: {f"e{e:02d}": dict(zip(ops, map(float, row))) for e, row in enumerate(w)}
            for role, w in snap["ops"].items()
        }
        if epoch == self.start_epoch:  # once per start: a chart per edge overlays its ops' weights
            self.board.layout(
                {
                    f"theta {role}": {f"edge {e}": [f"theta/{role}/{e}/.*"] for e in edges}
                    for role, edges in weights.items()
                }
            )
        self.board.scalars(weights, epoch + 1, prefix="theta")
        genotype = Genotype.from_dict(record["genotype"])
        self.board.text("genotype", f"`{genotype.describe()}`\n\n    {genotype.to_json()}", epoch + 1)

    def stop_early(self, epoch: int, record: Dict[str, Any]) -> bool:
        """DARTS+: stop once the decoded decoder cell holds ``early_stop_skips`` skips; keep the genotype before."""
        limit = self.cfg.search.early_stop_skips
        genotype = Genotype.from_dict(record["genotype"])
        if not darts_plus_stops(genotype, epoch + 1, self.cfg.search.arch_start_epoch, limit):
            self.kept_genotype = genotype
            return False
        log.info(
            "early stop (search.early_stop_skips=%d): %d skips in the decoder cell at epoch %d",
            limit,
            genotype.skip_count(),
            epoch + 1,
        )
        return True

    def epoch_batches(self, epoch: int, first_step: int):
        """Pairs (weight batch, architecture batch) of ``epoch`` from ``first_step`` on."""
        skip = first_step * self.cfg.search.batch_size
        self.w_loader.sampler.set_epoch(epoch, skip)
        self.a_loader.sampler.set_epoch(epoch, skip)
        return zip(self.w_loader, self.a_loader)

    def train_step(self, epoch: int, batch) -> Dict[str, float]:
        """An architecture step on one batch (from ``arch_start_epoch`` on), then a weight step on the other."""
        (xw, yw), (xa, ya) = batch
        se = self.cfg.search
        sums = {}
        if self.arch_active(epoch):
            self.a_opt.zero_grad(set_to_none=True)
            for p in self.w_params:  # the architecture step computes no weight gradient
                p.requires_grad_(False)
            logits = self.model(self.format.inputs(xa))  # never under autocast: theta's step is fp32
            a_loss = self.criterion(logits, ya.to(self.device, non_blocking=True))
            if self.cost is not None:
                cost = self.cost()
                (a_loss + se.cost.weight * cost).backward()
                sums["arch_cost"] = cost.item()
            else:
                a_loss.backward()
            for p in self.w_params:
                p.requires_grad_(True)
            self.ctx.average_gradients_(self.model.arch_parameters())  # identical theta on every rank
            self.a_opt.step()
            sums["arch_loss"] = a_loss.item()
        sums["train_loss"] = self.weight_step(xw, yw)
        return sums

    def weight_step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        """One SGD step of the supernet's weights on one batch; its loss."""
        self.w_opt.zero_grad()  # horovod's optimizer takes no set_to_none
        with self.format.autocast():
            logits = self.model(self.format.inputs(images))
        loss = self.criterion(logits.float(), masks.to(self.device, non_blocking=True))
        loss.backward()
        self.ctx.step(
            self.w_opt, before_step=lambda: nn.utils.clip_grad_norm_(self.w_params, self.cfg.search.grad_clip)
        )
        return loss.item()

    def epoch_summary(self, epoch: int, sums: Dict[str, float], steps: int) -> Dict[str, Any]:
        arch_on = self.arch_active(epoch)
        summary = {
            "train_loss": sums.get("train_loss", 0.0) / max(steps, 1),
            "arch_loss": sums["arch_loss"] / steps if arch_on and steps else None,
            "steps": steps,
            "arch_updates": arch_on,
        }
        if self.cost is not None:
            with torch.no_grad():
                summary["expected_cost"] = round(float(self.cost()), 6)  # relative to uniform theta: 1 at the start
        return summary

    def run(self) -> Genotype:
        """Train from ``start_epoch`` to the end, then decode and write the genotype."""
        self.run_epochs()
        if self.cfg.search.decode.method == "perturbation":
            genotype = self.select_by_perturbation()
        elif self.stopped_early and self.kept_genotype is not None:
            genotype = self.kept_genotype
        else:
            genotype = decode(self.cfg, self.model)
        if not self.ctx.is_root:
            return genotype
        genotype.save(RunDir(self.run_dir).genotype)
        snap = self.model.arch.snapshot()
        write_json(
            RunDir(self.run_dir).arch,
            {
                "ops": {r: w.tolist() for r, w in snap["ops"].items()},
                "edges": {r: [e.tolist() for e in es] for r, es in snap["edges"].items()} if snap["edges"] else None,
                "betas": {f"{i},{j}": b.tolist() for (i, j), b in snap["betas"].items()},
            },
        )
        log.info("genotype: %s", genotype.describe())
        problem = unmoved_theta(read_jsonl(RunDir(self.run_dir).metrics))
        if problem is not None:
            warn(problem)
        return genotype

    def select_by_perturbation(self) -> Genotype:
        """DARTS-PT on the trained supernet: the genotype, with every measured drop in ``selection.json``.

        Nothing of it is checkpointed: a run stopped here resumes from its last epoch and selects again."""
        d = self.cfg.search.decode
        for group in self.w_opt.param_groups:
            group["lr"] = self.cfg.search.lr * TUNE_LR_SHARE
        tune_batches = self.tune_batches()

        def measure() -> float:  # higher is better: the drop is how much the loss rises
            return -self.validation_loss(self.selection_loader)

        def tune() -> None:
            self.model.train()  # the search's own mode: batch statistics, as in every weight step before
            for images, masks in itertools.islice(tune_batches, d.tune_steps):
                self.weight_step(images, masks)

        log.info("perturbation selection (DARTS-PT): %d weight steps after each decision", d.tune_steps)
        try:
            with self.stop:
                snapshot = perturbation_snapshot(
                    self.model.arch, SearchSpace.from_config(self.cfg).kept_per_node(), measure, tune, self.cfg.seed
                )
        except StopWhileValidating:
            raise Interrupted(
                self.run_dir, self.stop.signal or "another rank's signal", "during perturbation selection"
            ) from None
        finally:
            self.model.arch.fixed_rows.clear()
        if self.ctx.is_root:
            drops = snapshot["drops"]
            write_json(
                RunDir(self.run_dir).selection,
                {
                    "method": "perturbation",
                    "ops": self.model.arch.op_names,
                    "op_drops": {r: [[_finite(v) for v in row] for row in m] for r, m in drops["ops"].items()},
                    "edge_drops": {r: [round(float(v), 6) for v in d] for r, d in drops["edges"].items()},
                },
            )
        return decode_configured(self.cfg, snapshot)

    def validation_loss(self, loader) -> float:
        """The supernet's class-weighted cross-entropy over ``loader``, every rank's shard together (one
        collective at the end, so ranks with more batches than others never wait)."""
        after_batch = self.batch_guard(loader)
        totals = torch.zeros(2, dtype=torch.float64)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for k, (images, masks) in enumerate(loader):
                    logits = self.model(self.format.inputs(images)).float()
                    loss, weights = self.criterion.terms(logits, masks.to(self.device, non_blocking=True))
                    totals += torch.stack([loss.double().cpu(), weights.double().cpu()])
                    after_batch(k)
        finally:
            self.model.train(was_training)
        loss, weights = self.ctx.sum(totals.numpy(), name="hpcnas.selection_loss")
        return float(loss / max(weights, 1e-12))

    def tune_batches(self):
        """Weight batches without end for the selection's tuning: epochs past the search's, so new orders."""
        for epoch in itertools.count(self.epochs):
            self.w_loader.sampler.set_epoch(epoch, 0)
            yield from self.w_loader


def _finite(value: float):
    return None if value != value else round(float(value), 6)  # an op never measured (none) is NaN: null
