"""Typed configuration: dataclass defaults (the paper's), YAML files, ``--set``.

A configuration is built in three layers, later ones winning: the dataclass
defaults below, a YAML file (``--config``), then ``--set section.key=value``
overrides.  Every layer is validated against the dataclasses: an unknown key,
a wrong type or an out-of-range value raises :class:`~hpcnas.errors.UserError`
naming the file and the dotted key (and the nearest valid key, if any).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Union

import yaml

from hpcnas.errors import UserError, nearest, warn
from hpcnas.plugins import (
    ARCH_OPTIMIZERS,
    COSTS,
    EVALUATORS,
    LOSSES,
    OBJECTIVES,
    OP_SETS,
    STRATEGIES,
    TOPOLOGIES,
    ZERO_COST_SCORES,
    Registry,
    check_op_set,
    in_range,
)

_range = in_range  # field metadata: inclusive bounds


def _options_of(chooser: str) -> Dict[str, Any]:
    """Field metadata: the section's other keys are the settings of the plugin its field ``chooser`` names,
    parsed by that plugin's ``Options`` dataclass (and written back beside ``chooser``)."""
    return {"options_of": chooser}


def _registered(registry: Registry) -> Dict[str, Any]:
    """Field metadata: the value (unless null) is a name in ``registry``, the only list of such names."""
    return {"registry": registry}


@dataclass
class SynthConfig:
    """The embedded synthetic data set, generated when ``data.path`` is empty."""

    n: int = field(default=48, metadata=_range(1))
    size: int = field(default=64, metadata=_range(16))
    seed: int = 0
    val_fraction: float = field(default=0.25, metadata=_range(0.0, 0.9))
    test_fraction: float = field(default=0.25, metadata=_range(0.0, 0.9))


@dataclass
class DataConfig:
    """Where the patches come from and how they are fed."""

    path: Optional[str] = None  # HDF5 file; None: synthesize into the run directory
    synth: SynthConfig = field(default_factory=SynthConfig)
    augment: bool = True  # flips and rot90 on the training split
    # DataLoader workers per rank; null: 2 with a GPU (decoding and augmentation off the step), none on a CPU
    # (where they would take the cores the step computes on).  The batches are the same with any number:
    # each sample's augmentation has its own seed, so a resumed run stays bit-exact.  Raise it when
    # metrics.jsonl's data_wait_s is a large part of train_s.
    num_workers: Optional[int] = field(default=None, metadata=_range(0))


@dataclass
class SpaceConfig:
    """The search space: topology = network structure + cell structure + op set."""

    topology: str = field(default="darts_unet", metadata=_registered(TOPOLOGIES))
    op_set: Optional[str] = field(default=None, metadata=_registered(OP_SETS))  # None: the topology's own
    channels: int = field(default=16, metadata=_range(1))  # initial channels (paper: 16)
    depth: int = field(default=3, metadata=_range(1, 6))  # number of 2x downsamplings
    nodes: int = field(default=4, metadata=_range(1, 8))  # intermediate nodes per DARTS cell
    towers: int = field(default=4, metadata=_range(1, 16))  # ResNeXt cell: parallel towers
    tower_depth: int = field(default=2, metadata=_range(1, 8))  # ResNeXt cell: nodes per tower
    # shared: one cell per type (DARTS' reduction and normal cell) at every level; per_stage: every encoder and
    # decoder level its own architecture weights and genotype cell
    cells: Literal["shared", "per_stage"] = "shared"
    # resnet_unet: the block groups searched (encoder, decoder, skip), the others hand-designed; null: all; or
    # "auto:K": every block through a warm-up epoch of architecture steps, then the K most decided ones only
    searchable: Union[None, List[str], str] = None


@dataclass
class DecodeConfig:
    """How a discrete genotype is read off the architecture parameters."""

    edges_per_node: int = field(default=2, metadata=_range(1))  # K of eq. 12
    paths: Union[Literal["auto"], int] = "auto"  # UNet++: "auto" = mu + 3 sigma (eq. 13), or a fixed K
    path_decoder: Literal["multipath", "viterbi"] = "multipath"
    max_skips: Optional[int] = field(
        default=None, metadata=_range(0)
    )  # P-DARTS: at most this many skips per decoder cell
    # at most this share of the decoder cell's edges without weights (skips, pooling); 0.5 measured best (README)
    max_parameter_free: Optional[float] = field(default=0.5, metadata=_range(0.0, 1.0))
    # the same cap for the other cell types (the reduction cells), each cell on its own; None: uncapped
    max_parameter_free_reduction: Optional[float] = field(default=None, metadata=_range(0.0, 1.0))
    # what chooses each edge's op and each node's inputs: theta's largest weight, or "perturbation" (DARTS-PT):
    # the largest rise of the supernet's validation loss when it is removed, edge by edge, after the search
    method: Literal["theta", "perturbation"] = "theta"
    tune_steps: int = field(default=4, metadata=_range(0))  # perturbation: weight steps after each decision
    # perturbation: the validation tiles measured (a fixed subset); None: those of search.val_max_tiles
    perturbation_tiles: Optional[int] = field(default=None, metadata=_range(1))


@dataclass
class CostConfig:
    """An optional resource term in the architecture loss: weight * E_theta[cost] / E_uniform[cost] (FBNet)."""

    # None: no term; params; latency: a per-op table timed on the device
    kind: Optional[str] = field(default=None, metadata=_registered(COSTS))
    weight: float = field(default=0.0, metadata=_range(0.0))


@dataclass
class SearchConfig:
    """Continuous search (DARTS / PC-DARTS / GAEA), paper section 5 defaults."""

    epochs: int = field(default=50, metadata=_range(1))
    batch_size: int = field(default=2, metadata=_range(1))
    arch_optimizer: str = field(default="gaea", metadata=_registered(ARCH_OPTIMIZERS))
    arch_lr: Optional[float] = field(
        default=None, metadata=_range(0.0)
    )  # a fixed step; None: the optimizer's default step (gaea: arch_movement 12; adam: lr 6e-4)
    # theta's total movement over the search instead of a fixed step: each architecture step is arch_movement /
    # (the search's architecture steps) on a normalized gradient, so a steadily favoured op gains about
    # e**arch_movement in odds at any budget; None: the optimizer's default step
    arch_movement: Optional[float] = field(default=None, metadata=_range(0.001))
    arch_weight_decay: float = field(default=1e-3, metadata=_range(0.0))  # Adam only
    arch_start_epoch: int = field(default=15, metadata=_range(0))  # 1-based: the first epoch with architecture steps
    partial_channels: int = field(default=1, metadata=_range(1))  # K of eq. 7; 1 = plain DARTS
    channel_sampling: Literal["shuffle", "random"] = (
        "random"  # random channels (measured best, README), or PC-DARTS' shuffle
    )
    aux_skip: float = field(default=0.0, metadata=_range(0.0))  # DARTS-: auxiliary skip weight, decayed linearly to 0
    early_stop_skips: Optional[int] = field(
        default=None, metadata=_range(1)
    )  # DARTS+: stop when the decoder cell has this many skips
    edge_normalization: bool = True  # eq. 8 (never applies to ResNeXt cells)
    lr: float = field(default=0.01, metadata=_range(0.0))
    lr_min: float = field(default=0.0, metadata=_range(0.0))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=1e-3, metadata=_range(0.0))
    grad_clip: float = field(default=5.0, metadata=_range(0.0))
    data_split: Literal["full", "half"] = "full"  # GAEA style (full set for w and theta) or DARTS 50/50
    # data parallel: BatchNorm statistics over every rank's batch (exact: N x b == 1 x N*b) at one collective per
    # layer and pass, or per rank (measured as good a search, README)
    sync_batchnorm: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"  # the weight step's forward under bf16 autocast (theta's stays fp32)
    channels_last: bool = False  # NHWC memory layout for the supernet and its inputs
    max_steps_per_epoch: Optional[int] = field(default=None, metadata=_range(1))
    val_every: int = field(default=1, metadata=_range(1))  # validate every this many epochs (and the last one)
    val_max_tiles: Optional[int] = field(default=None, metadata=_range(1))  # a fixed subset of the val split
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    cost: CostConfig = field(default_factory=CostConfig)


@dataclass
class TrainConfig:
    """Retraining a discrete architecture (paper section 5)."""

    epochs: int = field(default=80, metadata=_range(1))
    batch_size: int = field(default=2, metadata=_range(1))
    lr: float = field(default=0.01, metadata=_range(0.0))
    lr_min: float = field(default=0.0, metadata=_range(0.0))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=1e-3, metadata=_range(0.0))
    grad_clip: float = field(default=5.0, metadata=_range(0.0))
    select_from_epoch: int = field(default=30, metadata=_range(0))  # 1-based: the first epoch that may be the best
    channels: Optional[int] = field(
        default=None, metadata=_range(1)
    )  # a genotype's width when retrained; None: space.channels
    target_params: Optional[int] = field(
        default=None, metadata=_range(1)
    )  # scale the width to about this many parameters
    max_steps_per_epoch: Optional[int] = field(default=None, metadata=_range(1))
    # validation's budget: every val_every epochs (and the last), on a fixed subset of val_max_tiles tiles; the
    # selected checkpoint is validated on the whole split at the end
    val_every: int = field(default=1, metadata=_range(1))
    val_max_tiles: Optional[int] = field(default=None, metadata=_range(1))
    # the training loss: Dice (measured best, README "Search quality"), the paper's class-weighted
    # cross-entropy, focal, or cross-entropy + Dice
    loss: str = field(default="dice", metadata=_registered(LOSSES))  # ce, dice, focal, ce+dice
    baseline_width: int = field(default=32, metadata=_range(1))  # ResNet-UNet: channels of the first stage
    baseline_blocks: int = field(default=2, metadata=_range(1))  # ResNet-UNet: residual blocks per stage
    precision: Literal["fp32", "bf16"] = "fp32"  # the training step's forward under bf16 autocast
    channels_last: bool = False  # NHWC memory layout for the network and its inputs


@dataclass
class StrategySection:
    """Which strategy proposes the architectures of a discrete search, and how."""

    # a registered strategy: evolution, nsga2 (multi-objective), random, random_exploit
    name: str = field(default="evolution", metadata=_registered(STRATEGIES))
    mode: Literal["async", "generational"] = "async"  # steady-state, or the paper's Algorithm 1
    # the strategy's own settings, written beside name and mode and checked by its Options dataclass:
    # evolution, nsga2: population (20), sample_size (5); random_exploit: warmup (20), exploit (0.5)
    options: Any = field(default=None, metadata=_options_of("name"))

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = STRATEGIES[self.name].Options()


@dataclass
class ExecutorSection:
    """How the MPI orchestrator runs evaluations."""

    task_timeout: float = field(default=3600.0, metadata=_range(0.1))  # seconds per evaluation
    grace_period: float = field(
        default=60.0, metadata=_range(0.0)
    )  # after SIGTERM/SIGUSR2: wait this long for in-flight results
    threads_per_rank: Optional[int] = field(
        default=None, metadata=_range(1)
    )  # CPU threads of each child; None: cores / ranks on the node


@dataclass
class EvaluatorSection:
    """What one evaluation does in a worker child."""

    # a registered evaluator: train, or sleep (no training, log-normal sleeps: benchmarks)
    name: str = field(default="train", metadata=_registered(EVALUATORS))
    proxy_epochs: int = field(default=5, metadata=_range(1))  # the short training schedule of each evaluation
    keep_checkpoints: bool = False  # keep each evaluation's checkpoints (disk grows with the search)
    latency_runs: int = field(default=10, metadata=_range(0))  # timed forward passes per latency measurement (0: none)
    zero_cost: bool = False  # also record grad-norm, SynFlow and NASWOT of each architecture at initialization
    # the evaluator's own settings, written beside name and checked by its Options dataclass:
    # sleep: sleep_median (1.0 s), sleep_sigma (0.5, the log-normal's shape); train: none
    options: Any = field(default=None, metadata=_options_of("name"))

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = EVALUATORS[self.name].Options()


@dataclass
class FaultsSection:
    """What to do about failures, and failures to cause on purpose."""

    retry_oom_half_batch: bool = True  # an OOM is retried once at half the batch size
    inject: List[str] = field(default_factory=list)  # "ID:oom|kill|hang|error": fault tolerance drills


@dataclass
class MemorySection:
    """Memory-aware dispatch: estimate each architecture's peak training memory before it is sent to a rank."""

    # None: no estimate; "auto": 90 % of the smallest device memory the ranks' children report (GPU, else the
    # node's memory shared by its ranks); a number: GiB per evaluation
    limit: Union[None, Literal["auto"], float] = field(default=None, metadata=_range(0.001))
    policy: Literal["shrink_batch", "skip"] = "shrink_batch"  # train at the largest batch that fits, or record too_big


@dataclass
class PrescreenSection:
    """Zero-cost pre-screen: per dispatch, score ``sample`` proposals at initialization and send the best ``keep``."""

    # a name in hpcnas.plugins.ZERO_COST_SCORES (naswot, synflow, grad_norm, params); None: no pre-screen
    score: Optional[str] = field(default=None, metadata=_registered(ZERO_COST_SCORES))
    sample: int = field(default=10, metadata=_range(1))
    keep: int = field(default=1, metadata=_range(1))
    batch: int = field(default=8, metadata=_range(2))  # training patches scored (NASWOT needs two or more)


@dataclass
class AshaSection:
    """Asynchronous successive halving: stop an evaluation at a rung where it is not in the top 1/reduction_factor."""

    min_resource: Optional[int] = field(default=None, metadata=_range(1))  # epochs of the first rung; None: off
    reduction_factor: int = field(default=3, metadata=_range(2))  # rungs at r, r*eta, r*eta^2, ... epochs


@dataclass
class EvolveConfig:
    """Discrete search on the MPI orchestrator (paper Appendix A.1): its goal and budget, then its parts."""

    objectives: List[str] = field(default_factory=lambda: ["miou"])  # "name" or "name <= bound"; the first is primary
    # the settings of objectives that have some (a plugin's), by objective name: each checked by its own options
    measure: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    max_evaluations: int = field(default=100, metadata=_range(1))
    time_budget: Optional[float] = field(default=None, metadata=_range(0.0))  # seconds; None: no limit
    strategy: StrategySection = field(default_factory=StrategySection)
    executor: ExecutorSection = field(default_factory=ExecutorSection)
    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)
    faults: FaultsSection = field(default_factory=FaultsSection)
    memory: MemorySection = field(default_factory=MemorySection)
    prescreen: PrescreenSection = field(default_factory=PrescreenSection)
    asha: AshaSection = field(default_factory=AshaSection)


# the flat evolve keys of earlier versions -> where they live now (still read, with a deprecation line)
LEGACY_EVOLVE_KEYS = {
    "strategy": "strategy.name",
    "mode": "strategy.mode",
    "population": "strategy.population",
    "sample_size": "strategy.sample_size",
    "task_timeout": "executor.task_timeout",
    "grace_period": "executor.grace_period",
    "threads_per_rank": "executor.threads_per_rank",
    "evaluator": "evaluator.name",
    "proxy_epochs": "evaluator.proxy_epochs",
    "keep_checkpoints": "evaluator.keep_checkpoints",
    "sleep_median": "evaluator.sleep_median",
    "sleep_sigma": "evaluator.sleep_sigma",
    "retry_oom_half_batch": "faults.retry_oom_half_batch",
    "inject_faults": "faults.inject",
}


def _legacy_target(key: str, value: Any) -> Optional[str]:
    """The new place of an old flat ``evolve`` key (``strategy``/``evaluator`` only when given a name), else None."""
    if key not in LEGACY_EVOLVE_KEYS or (key in ("strategy", "evaluator") and isinstance(value, dict)):
        return None
    return LEGACY_EVOLVE_KEYS[key]


def _deprecated(old: str, new: str, source: str) -> None:
    print(f"hpcnas: deprecated: evolve.{old} is now evolve.{new} ({source})", file=sys.stderr)


def migrate_legacy_keys(raw: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Move the old flat ``evolve`` keys of a config mapping into their sections, saying so once per key."""
    evolve = raw.get("evolve")
    if not isinstance(evolve, dict):
        return raw
    moved = dict(evolve)
    for key in ("strategy", "evaluator"):  # first the names, whose old keys are the new sections' names
        if key in moved and _legacy_target(key, moved[key]) is not None:
            moved[key] = {"name": moved[key]}
            _deprecated(key, LEGACY_EVOLVE_KEYS[key], source)
    for key, value in evolve.items():
        target = _legacy_target(key, value)
        if target is None or key in ("strategy", "evaluator"):
            continue
        section, name = target.split(".")
        del moved[key]
        moved[section] = dict(moved.get(section) or {}, **{name: value})
        _deprecated(key, target, source)
    return dict(raw, evolve=moved)


@dataclass
class MonitorConfig:
    """What a run writes for watching it live: TensorBoard events in ``DIR/tb`` (rank 0)."""

    tensorboard: bool = True
    images_every: int = field(default=5, metadata=_range(0))  # epochs between validation images (0: none)
    images: int = field(default=3, metadata=_range(1))  # validation tiles shown: image | truth | prediction


@dataclass
class Config:
    """The whole resolved configuration of a run (written to ``config.yaml``)."""

    seed: int = field(default=0, metadata=_range(0))
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


# --------------------------------------------------------------------------
# loading, overriding, validating


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides.

    Each layer is validated on its own, so an error names the layer at fault
    (the file, or ``--set``).
    """
    _SAID.clear()
    raw = migrate_legacy_keys(read_yaml_mapping(path), str(path)) if path else {}
    cfg = from_dict(Config, raw, source=str(path) if path else "<defaults>")
    check_consistency(cfg, str(path) if path else "<defaults>")
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        target = _legacy_target(parts[1], value) if len(parts) == 2 and parts[0] == "evolve" else None
        if target is not None:
            _deprecated(parts[1], target, "--set")
            key = f"evolve.{target}"
        # the keys given so far, not the resolved config: a plugin's settings are those given for it, so naming
        # another strategy does not inherit the first one's defaults as if they had been written
        set_dotted(to_dict(cfg), key, value, source="--set")  # a key through a value (seed.x) is named as such
        set_dotted(raw, key, value, source="--set")
        cfg = from_dict(Config, raw, source="--set")
    if overrides:  # the rules between keys once all are given: the overrides may change the keys of a rule in turn
        check_consistency(cfg, "--set")
    return cfg


def check_consistency(cfg: Config, source: str) -> None:
    """Rules that tie several keys together (each key alone was checked against its bounds)."""
    s = cfg.data.synth
    if s.val_fraction + s.test_fraction >= 1:
        raise UserError(
            f"val_fraction + test_fraction must be below 1 (no training data left), got "
            f"{s.val_fraction} + {s.test_fraction}",
            source=source,
            key="data.synth",
        )
    if cfg.space.channels % cfg.search.partial_channels:
        # every topology has mixed ops at space.channels and at multiples of it, so this one check covers them all
        raise UserError(
            f"space.channels={cfg.space.channels} cannot be split into 1/{cfg.search.partial_channels} parts: "
            f"search.partial_channels must divide it",
            source=source,
            key="search.partial_channels",
        )
    topology = TOPOLOGIES[cfg.space.topology]
    check_op_set(cfg.space.op_set or topology.op_set, source)
    topology.check_candidates(cfg.space.op_set or topology.op_set, source)
    topology.check_searchable(cfg.space.searchable, source)
    for objective in cfg.evolve.measure:
        OBJECTIVES.check(objective, source, key=f"evolve.measure.{objective}")
        measure_options(cfg, objective, source)


def measure_options(cfg: Config, objective: str, source: str = "config") -> Any:
    """The typed settings of ``objective`` (its metric's ``options`` dataclass, from ``evolve.measure.<name>``), or
    ``None`` for a metric without settings."""
    metric = OBJECTIVES[objective]
    raw = cfg.evolve.measure.get(objective, {})
    key = f"evolve.measure.{objective}"
    if metric.options is None:
        if raw:
            raise UserError(f"objective '{objective}' has no settings", source=source, key=key)
        return None
    return from_dict(metric.options, raw, source, prefix=f"{key}.")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error, not 'the last one wins'."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: str) -> Dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is ``{}``)."""
    p = Path(path)
    if p.is_dir():
        raise UserError("is a directory, not a YAML file", source=str(path))
    if not p.is_file():
        raise UserError("no such file", source=str(path))
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}): a config is a YAML text file", source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise UserError(f"{where}malformed YAML ({problem})", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", source=str(path))
    return data


def parse_override(item: str) -> "tuple[str, Any]":
    """``'search.epochs=3'`` -> ``('search.epochs', 3)``; the value is read as YAML."""
    if "=" not in item:
        raise UserError(f"'{item}' is not of the form section.key=value", source="--set")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise UserError(f"'{item}' has an empty key", source="--set")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(tree: Dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``tree['a']['b'] = value`` for ``key='a.b'``, creating sections."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"'{'.'.join(parts[: i + 1])}' is a value, not a section", source=source, key=key)
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, raw: Dict[str, Any], source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (partial) mapping, validating every key."""
    if not isinstance(raw, dict):
        raise UserError(f"expected a section (mapping), got {raw!r}", source=source, key=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    holder = next((f for f in fields.values() if "options_of" in f.metadata), None)  # a plugin's settings
    settings = {}
    for name in raw:
        if holder is not None and (name not in fields or name == holder.name):
            settings[name] = raw[name]
        elif name not in fields:
            raise UserError(f"unknown key{nearest(str(name), fields)}", source=source, key=f"{prefix}{name}")
    values = {}
    for name, f in fields.items():
        if name not in raw or f is holder:
            continue
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = from_dict(typing.cast(type, tp), raw[name], source, prefix=f"{key}.")
        else:
            values[name] = _coerce(raw[name], tp, source, key)
            _check_range(values[name], f, source, key)
            if "registry" in f.metadata and values[name] is not None:
                f.metadata["registry"].check(values[name], source, key)
    if holder is not None:
        chooser = fields[holder.metadata["options_of"]]
        chosen = values.get(chooser.name, chooser.default)
        shared = [name for name in fields if name != holder.name]
        values[holder.name] = plugin_options(chooser.metadata["registry"], chosen, settings, source, prefix, shared)
    return cls(**values)


_SAID: set = set()  # the keys one load_config has warned about (each --set parses the keys again)


def _say_once(key: str, say: Callable[[], None]) -> None:
    """Say something about ``key`` once per ``load_config``: the first time names where the key was written, and
    the re-parse after each ``--set`` (whose source is "--set") would repeat it under the wrong name."""
    if key not in _SAID:
        _SAID.add(key)
        say()


def plugin_options(
    registry: Registry, chosen: str, raw: Dict[str, Any], source: str, prefix: str, shared: Sequence[str] = ()
) -> Any:
    """The typed settings of plugin ``chosen`` from the keys ``raw`` written for it (its ``Options`` dataclass).

    A key renamed by the plugin (``Options.renamed``: old -> new) is read with a deprecation line; a setting of
    another plugin of the same kind is ignored with a warning (a config that switches strategies keeps working);
    any other key is refused with the nearest setting, its own or one of the ``shared`` keys of its section."""
    options_cls = registry[chosen].Options
    own = [f.name for f in dataclasses.fields(options_cls)]
    renamed = getattr(options_cls, "renamed", {})
    mine = {}
    for key, value in raw.items():
        if key in renamed:
            line = f"hpcnas: deprecated: {prefix}{key} is now {prefix}{renamed[key]} for {registry.what} '{chosen}'"
            _say_once(f"{prefix}{key}", lambda: print(f"{line} ({source})", file=sys.stderr))
            mine[renamed[key]] = value
        elif key in own:
            mine[key] = value
        elif any(key in {f.name for f in dataclasses.fields(p.Options)} for p in registry.values()):
            line = f"{prefix}{key} is not a setting of {registry.what} '{chosen}': ignored"
            _say_once(f"{prefix}{key}", lambda: warn(f"{line} ({source})"))
        else:
            known = f"settings of '{chosen}': {', '.join(own)}" if own else f"'{chosen}' has no settings"
            if shared:
                known += f"; of every {registry.what}: {', '.join(shared)}"
            hint = nearest(str(key), [*own, *shared]) or f" ({known})"
            raise UserError(f"unknown key{hint}", source=source, key=f"{prefix}{key}")
    return from_dict(options_cls, mine, source, prefix)


_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted as floats."""
    origin = typing.get_origin(tp)
    if origin is Union:
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, source, key)
            except UserError as exc:
                errors.append(exc.message)
        raise UserError(" or ".join(dict.fromkeys(errors)) + f", got {value!r}", source=source, key=key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = nearest(str(value), [str(c) for c in choices])
        raise UserError(f"must be one of {', '.join(map(str, choices))}{hint}", source=source, key=key)
    if tp is type(None):
        if value is None:
            return None
        raise UserError("expected null", source=source, key=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError("expected true or false", source=source, key=key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError("expected an integer", source=source, key=key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT.match(value.strip()):  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        raise UserError("expected a number", source=source, key=key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError("expected a string", source=source, key=key)
    if tp is Any:
        return value
    if origin in (dict, Dict):
        _, value_tp = typing.get_args(tp)  # the keys are names (str), checked below
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError("expected a mapping of names", source=source, key=key)
        return {k: _coerce(v, value_tp, source, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError("expected a list", source=source, key=key)
        return [_coerce(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _check_range(value: Any, f: dataclasses.Field, source: str, key: str) -> None:
    lo, hi = f.metadata.get("range", (None, None))
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if not math.isfinite(value):  # NaN compares false with every bound, so it would pass them
        raise UserError(f"must be a finite number, got {value}", source=source, key=key)
    if lo is not None and value < lo:
        raise UserError(f"must be >= {lo}, got {value}", source=source, key=key)
    if hi is not None and value > hi:
        raise UserError(f"must be <= {hi}, got {value}", source=source, key=key)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """A plain-data copy of a config dataclass (for YAML and JSON); a plugin's settings sit beside its name."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if "options_of" in f.metadata:
            out.update(to_dict(value))
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = copy.deepcopy(value)
    return out


def dump_config(cfg: Config, path: Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from hpcnas.rundir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
