"""The layers import one way: nothing imports a module of a higher layer, not even lazily."""

import ast
from pathlib import Path

import hpcnas

ROOT = Path(hpcnas.__file__).parent
# lower number = lower layer; modules of one layer may import each other
LAYERS = {
    "errors": 0,
    "plugins": 0,  # the registries: built-ins are imported by name, only when used
    "progress": 0,
    "rundir": 1,
    "run": 1,  # an open run: its lock, heartbeat and stop flag
    "signals": 1,
    "runtime": 1,
    "config": 2,
    "board": 2,
    "checkpoint": 2,
    "distributed": 2,
    "data": 3,
    "space": 4,
    "records": 5,
    "strategies": 5,
    "train": 6,
    "search": 7,
    "predict": 7,
    "execution": 8,
    "pipeline": 9,  # what each command does
    "cluster": 10,  # runs pipeline commands as SLURM jobs
    "report": 11,  # reads runs, and asks SLURM how their jobs stand
    "smoke": 12,  # pipeline + report, end to end
    "cli": 13,
}


def _top(module: str) -> str:
    return module.split(".")[1] if module.startswith("hpcnas.") else ""


def imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "hpcnas" and node.level == 0:
            for alias in node.names:  # from hpcnas import pipeline: the module pipeline, not an empty name
                yield node.lineno, f"hpcnas.{alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_every_module_has_a_layer():
    names = {p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py"}
    names |= {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert names - set(LAYERS) == set(), "a new top-level module needs a layer in this test"


def test_no_import_runs_up_the_layers():
    upward = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, module in imports_of(path):
            target = _top(module)
            if target and target in LAYERS and LAYERS[target] > LAYERS[own]:
                upward.append(f"{rel}:{line} imports {module}")
    assert upward == []
