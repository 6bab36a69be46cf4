"""What each user command does, end to end, on top of the layers below.

Every function here resolves a configuration, prepares the run directory
(``config.yaml``, ``log.txt``) and calls one layer; ``cli.py`` only parses.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

from hpcnas.config import Config, dump_config, load_config
from hpcnas.errors import UserError
from hpcnas.rundir import make_run_dir

log = logging.getLogger("hpcnas")

SMOKE_CONFIG = Path(__file__).resolve().parent / "configs" / "smoke.yaml"


def prepare_run(command: str, config_path: Optional[str], overrides: Sequence[str], out: Optional[str], resume: Optional[str]) -> Tuple[Config, Path]:
    """Resolve the configuration and the run directory (a resumed run reuses its own config)."""
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError("not a run directory (no config.yaml)", source=str(resume))
        cfg = load_config(config_path or str(run_dir / "config.yaml"), overrides)
    else:
        if config_path is None:
            raise UserError("--config is required (or --resume DIR)")
        cfg = load_config(config_path, overrides)
        run_dir = make_run_dir(out, command)
    dump_config(cfg, run_dir / "config.yaml")
    _log_to(run_dir / "log.txt")
    return cfg, run_dir


def _log_to(path: Path) -> None:
    root = logging.getLogger("hpcnas")
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def resolve_data(cfg: Config, run_dir: Path) -> str:
    """The data set's path: ``data.path``, or the synthetic set generated into the run directory."""
    from hpcnas.data.synth import synthesize

    if cfg.data.path:
        return cfg.data.path
    path = run_dir / "data.h5"
    if not path.exists():
        s = cfg.data.synth
        counts = synthesize(path, n=s.n, size=s.size, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction)
        log.info("synthetic data: %s (%s)", path, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return str(path)


def search(config_path: Optional[str], overrides: Sequence[str] = (), out: Optional[str] = None, resume: Optional[str] = None, device: Optional[str] = None):
    """``hpcnas search``: continuous search into a run directory; returns (genotype, run_dir)."""
    cfg, run_dir = prepare_run("search", config_path, overrides, out, resume)
    from hpcnas.data.hdf5 import read_info
    from hpcnas.runtime import select_device
    from hpcnas.search.checkpoint import LATEST
    from hpcnas.search.continuous import SupernetSearch

    dev = select_device(device or cfg.device)
    data_path = resolve_data(cfg, run_dir)
    info = read_info(data_path)
    runner = SupernetSearch(cfg, run_dir, data_path, info, dev)
    latest = run_dir / "checkpoints" / LATEST
    if resume and latest.exists():
        runner.restore(latest)
        log.info("resuming %s from epoch %d", run_dir, runner.start_epoch)
    log.info("search %s on %s: %s, %d epochs -> %s", cfg.space.topology, dev, cfg.search.arch_optimizer, cfg.search.epochs, run_dir)
    return runner.run(), run_dir


def smoke(out: Optional[str] = None, config_path: Optional[str] = None, overrides: Sequence[str] = ()) -> Path:
    """``hpcnas smoke``: the local end-to-end run on the embedded synthetic data."""
    t0 = time.time()
    genotype, run_dir = search(config_path or str(SMOKE_CONFIG), overrides, out=out)
    print(f"smoke search done in {time.time() - t0:.0f}s: {run_dir}/genotype.json")
    print(genotype.describe())
    return run_dir
