"""Plugins: one registry per kind, the only list of the names a config may use.

Each kind of plugin (topology, op set, op, cell kind, strategy, evaluator,
objective, architecture optimizer, cost, loss, zero-cost score) has a :class:`Registry`.  The config checks a name
against it when it is loaded, and the code that builds the thing looks it up
there.  A built-in entry is written ``"module:attribute"`` and imported only
when first used, so checking a config imports no torch (the orchestrator of a
discrete search never does).

A plugin of your own is one file that adds to a registry::

    from hpcnas.plugins import STRATEGIES
    from hpcnas.strategies.base import Strategy

    @STRATEGIES.register
    class Greedy(Strategy):
        name = "greedy"
        ...

and reaches every process of a run (MPI ranks, worker children, SLURM jobs)
through the entry point group ``hpcnas.plugins`` of its package::

    [options.entry_points]
    hpcnas.plugins =
        greedy = my_package.greedy

Every registry loads that group before it answers, once per process.  An
entry point names a module (imported: its decorators register) or a function
(called with no arguments).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, TypeVar

from hpcnas.errors import UserError, unknown_name

T = TypeVar("T")

ENTRY_POINT_GROUP = "hpcnas.plugins"


def in_range(lo: Optional[float] = None, hi: Optional[float] = None) -> Dict[str, Any]:
    """Field metadata for a config field or a plugin's ``Options``: inclusive bounds, checked when a config is
    loaded (``field(default=20, metadata=in_range(1))``)."""
    return {"range": (lo, hi)}


def import_target(target: str) -> Any:
    """The object ``"package.module:attribute"`` names, its module imported."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class _Builtin:
    """A registry entry not imported yet: ``module:attribute``."""

    def __init__(self, target: str):
        self.target = target

    def load(self) -> Any:
        return import_target(self.target)


class Registry(Generic[T]):
    """The names of one kind of plugin, each with what it builds.

    Read like a mapping (``in``, ``[name]``, iteration over the names, :meth:`values`), where an unknown name
    is a :class:`UserError` naming the known ones; written with :meth:`add` or :meth:`register`.
    Built-ins are ``builtins`` (imported one by one, when first used) or whatever the module ``registered_in``
    adds when it is imported (before the registry first answers: for small records, such as ops, that are
    cheaper to write as a list than as one module attribute each).
    """

    def __init__(self, what: str, key: str, builtins: Mapping[str, str], registered_in: Optional[str] = None):
        self.what = what  # "strategy": how error messages name an entry
        self.key = key  # "evolve.strategy.name": the config key that chooses one
        self._entries: Dict[str, Any] = {name: _Builtin(target) for name, target in builtins.items()}
        self._registered_in = registered_in

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name`` (replacing a built-in of that name); returns ``entry``."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} needs a non-empty string name, got {name!r}")
        self._entries[name] = entry
        return entry

    def register(self, entry: T) -> T:
        """Class decorator: register ``entry`` under its ``name`` attribute."""
        return self.add(getattr(entry, "name", None), entry)  # type: ignore[arg-type]

    def names(self) -> List[str]:
        """Every registered name, the installed plugins' included."""
        if self._registered_in is not None:
            importlib.import_module(self._registered_in)  # its built-ins come first: it is imported before plugins
        load_installed_plugins()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def check(self, name: object, source: Optional[str] = None, key: Optional[str] = None) -> None:
        """Raise a :class:`UserError` naming the known entries when ``name`` is not one of them."""
        if name not in self:
            raise UserError(unknown_name(self.what, name, self.names()), source=source, key=key or self.key)

    def __getitem__(self, name: str) -> T:
        """The entry registered as ``name``, imported on first use; an unknown name is a :class:`UserError`."""
        self.check(name)
        entry = self._entries[name]
        if isinstance(entry, _Builtin):
            entry = self._entries[name] = entry.load()
        return entry

    def values(self) -> List[T]:
        """Every entry, each imported."""
        return [self[name] for name in self.names()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


_installed: Optional[List[str]] = None  # the entry points this process loaded, once


def load_installed_plugins() -> List[str]:
    """Import every ``hpcnas.plugins`` entry point once per process; the names of those loaded."""
    global _installed
    if _installed is not None:
        return _installed
    _installed = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            if callable(loaded) and not isinstance(loaded, ModuleType):
                loaded()
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix: say which one
            raise UserError(f"plugin {point.name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}")
        _installed.append(point.name)
    return _installed


def _builtins(module: str, **attributes: str) -> Dict[str, str]:
    return {name: f"{module}:{attribute}" for name, attribute in attributes.items()}


TOPOLOGIES: Registry[Any] = Registry(
    "topology",
    "space.topology",
    _builtins(
        "hpcnas.space.topology",
        darts_unet="DARTS_UNET",
        darts_unetpp="DARTS_UNETPP",
        resnext_unet="RESNEXT_UNET",
        resnet_unet="RESNET_UNET",
    ),
)
OP_SETS: Registry[Any] = Registry(
    "op set",
    "space.op_set",
    _builtins("hpcnas.space.topology", O_base="O_BASE", O_large="O_LARGE", O_blocks="O_BLOCKS"),
)
# hpcnas.space.topology.Op records: what each op is (for decoding) and how to build it (imported only then)
OPS: Registry[Any] = Registry("op", "space.op_set", {}, registered_in="hpcnas.space.topology")
# the torch module of each cell kind, by the kind's name (a topology holds its CellKind itself)
CELL_MODULES: Registry[Any] = Registry(
    "cell kind",
    "space.topology",
    {
        **_builtins("hpcnas.space.cells", darts="DartsCell", resnext="ResNeXtCell"),
        **_builtins("hpcnas.space.blocks", block="BlockCell"),
    },
)
STRATEGIES: Registry[Any] = Registry(
    "strategy",
    "evolve.strategy.name",
    {
        "evolution": "hpcnas.strategies.evolution:RegularizedEvolution",
        "nsga2": "hpcnas.strategies.nsga2:NSGA2",
        "random": "hpcnas.strategies.random:RandomSearch",
        "random_exploit": "hpcnas.strategies.random_exploit:RandomExploit",
    },
)
EVALUATORS: Registry[Any] = Registry(
    "evaluator",
    "evolve.evaluator.name",
    _builtins("hpcnas.execution.worker", train="TrainEvaluator", sleep="SleepEvaluator"),
)
ARCH_OPTIMIZERS: Registry[Any] = Registry(
    "architecture optimizer", "search.arch_optimizer", _builtins("hpcnas.search.gaea", gaea="GAEA", adam="ADAM")
)
COSTS: Registry[Callable[..., float]] = Registry(
    "cost", "search.cost.kind", _builtins("hpcnas.search.cost", params="params_cost", latency="latency_cost")
)
OBJECTIVES: Registry[Any] = Registry(
    "objective",
    "evolve.objectives",
    _builtins(
        "hpcnas.strategies.objectives",
        miou="MIOU",
        params="PARAMS",
        flops="FLOPS",
        latency="LATENCY",
        peak_memory="PEAK_MEMORY",
    ),
)
LOSSES: Registry[Any] = Registry(
    "loss",
    "train.loss",
    {
        "ce": "hpcnas.train.losses:WeightedCrossEntropy",
        "focal": "hpcnas.train.losses:FocalLoss",
        "dice": "hpcnas.train.losses:DiceLoss",
        "ce+dice": "hpcnas.train.losses:CrossEntropyDice",
    },
)


def check_op_set(op_set: str, source: Optional[str] = None) -> None:
    """A :class:`UserError` when ``op_set`` is not registered or names an op that is not (a plugin's typo)."""
    OP_SETS.check(op_set, source)
    for op in OP_SETS[op_set]:
        if op not in OPS:
            raise UserError(f"op set '{op_set}' names an {unknown_name('op', op, OPS.names())}", source, OP_SETS.key)


# each a function (model, images, masks) -> float, higher is better
ZERO_COST_SCORES: Registry[Callable[..., float]] = Registry(
    "zero-cost score",
    "evolve.prescreen.score",
    _builtins("hpcnas.train.zero_cost", grad_norm="grad_norm", synflow="synflow", naswot="naswot", params="params"),
)
