"""What each user command does, end to end, on top of the layers below.

Every function here resolves a configuration, prepares the run directory
(``config.yaml``, ``log.txt``) and calls one layer; ``cli.py`` only parses.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from hpcnas.config import Config, dump_config, load_config
from hpcnas.errors import Interrupted, UserError
from hpcnas.run import Run, RunScope, holds_run_dirs, snapshot_run_dir
from hpcnas.rundir import RunDir
from hpcnas.signals import stoppable

log = logging.getLogger("hpcnas")

SMOKE_CONFIG = Path(__file__).resolve().parent / "configs" / "smoke.yaml"


def resolve_config(config_path: Optional[str], overrides: Sequence[str], resume: Optional[str]) -> Config:
    """The configuration of a new run, or of the run being resumed (its own config.yaml)."""
    if resume:
        run_dir = Path(resume)
        if not RunDir(run_dir).config.is_file():
            raise UserError("not a run directory (no config.yaml)", source=str(resume))
        return load_config(config_path or str(RunDir(run_dir).config), overrides)
    if config_path is None:
        raise UserError("--config is required (or --resume DIR)")
    return load_config(config_path, overrides)


def start_or_resume(out: Optional[str]) -> tuple:
    """``(out, resume)`` for a command line that must start a run in ``out`` or, when ``out``
    already holds one (a requeued job), continue it: ``--out DIR --resume-existing``."""
    if not out:
        raise UserError("--resume-existing needs --out DIR (and no --resume)")
    if RunDir(out).config.exists():
        return None, out
    return out, None


def open_run(
    runs: RunScope, command: str, cfg: Config, out: Optional[str], resume: Optional[str], write_config: bool = True
) -> Run:
    """Create (or reopen) the run directory and lock it in ``runs``; write config.yaml, log into log.txt and, on
    rank 0, start the heartbeat.

    ``write_config=False`` leaves config.yaml to the caller, for a resume that must check its
    input first: a refused resume must not rewrite the run's config.
    """
    if not resume and out and RunDir(out).config.exists():
        raise UserError(
            f"already holds a run: continue it with --resume {out}, or choose another --out", source=str(out)
        )
    run_dir = Path(resume) if resume else runs.make_run_dir(out, command)
    before = snapshot_run_dir(run_dir) if resume else None
    runs.lock(run_dir)
    if before is not None:
        runs.guard(before)  # now the writer: a resume refused further on leaves the run directory as it was
    if not resume and RunDir(run_dir).config.exists():  # another start got here first
        raise UserError(
            f"already holds a run: continue it with --resume {out}, or choose another --out", source=str(out)
        )
    if write_config:
        dump_config(cfg, RunDir(run_dir).config)
    _log_to(RunDir(run_dir).log)
    from hpcnas.distributed import launched_rank

    heart = runs.start_heartbeat(run_dir, command) if launched_rank() == 0 else None
    return Run(run_dir, heart)


def _log_to(path: Path) -> None:
    root = logging.getLogger("hpcnas")
    for old in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(old)  # one run's log.txt holds that run only
        old.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def same_data(run_dir: Path, info, data_path: str) -> None:
    """Record what the run is trained on (``data.json``) at its start; on a resume, refuse other data.

    The fingerprint is what a changed data set or split changes: the file's size, the patches
    per split, the tile, the classes and their weights (reading every byte of a large file to hash
    it would cost minutes at each requeue).
    """
    from hpcnas.rundir import write_json

    mark = {
        "path": str(Path(data_path).resolve()),
        "bytes": Path(data_path).stat().st_size,
        "splits": info.split_sizes,
        "tile": info.tile_size,
        "classes": info.class_names,
        "class_weights": [round(float(w), 6) for w in info.class_weights],
    }
    path = RunDir(run_dir).data_fingerprint
    if not path.exists():
        write_json(path, mark)
        return
    before = json.loads(path.read_text())
    changed = [key for key in mark if key != "path" and before.get(key) != mark[key]]
    if changed:
        raise UserError(
            f"the data differs from the data this run started on ({', '.join(changed)} changed; it was "
            f"{before['path']}): resume with the same data, or start a new run",
            source=str(data_path),
        )


def checkpoint_to_resume(run_dir: Path) -> Optional[Path]:
    """``checkpoints/latest.pt`` of a run being resumed, or ``None`` when it never wrote one.

    A run that logged epochs but lost that file is refused: restarting it from epoch 0
    would cut its metrics.jsonl (best.pt lacks the optimizer and RNG state to go on from).
    """
    from hpcnas.rundir import read_jsonl

    latest = RunDir(run_dir).latest
    if latest.exists():
        return latest
    logged = len(read_jsonl(RunDir(run_dir).metrics))
    if logged:
        raise UserError(
            f"{latest.relative_to(run_dir)} is missing but {logged} epoch(s) are logged: nothing to resume from "
            "(the history is left as it is); start a new run",
            source=str(run_dir),
        )
    return None


def resolve_data(cfg: Config, run_dir: Path) -> str:
    """The data set's path: ``data.path``, or the synthetic set generated into the run directory."""
    from hpcnas.data.synth import synthesize

    if cfg.data.path:
        return cfg.data.path
    path = RunDir(run_dir).data
    if not path.exists():
        s = cfg.data.synth
        counts = synthesize(
            path, n=s.n, size=s.size, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction
        )
        log.info("synthetic data: %s (%s)", path, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return str(path)


def check_architecture_budget(cfg) -> None:
    """Refuse a search whose architecture would never take a step (it would decode a uniform theta)."""
    se = cfg.search
    if se.arch_start_epoch > se.epochs:
        raise UserError(
            f"search.arch_start_epoch={se.arch_start_epoch} comes after the last epoch (search.epochs={se.epochs}): "
            f"the architecture would never be trained; set search.arch_start_epoch to at most {se.epochs}",
            key="search.arch_start_epoch",
        )
    if se.arch_lr is not None and se.arch_movement is not None:
        raise UserError(
            f"search.arch_lr={se.arch_lr:g} and search.arch_movement={se.arch_movement:g} both set theta's step: "
            "keep one (set the other to null)",
            key="search.arch_movement",
        )
    if se.arch_lr == 0:
        raise UserError(
            "search.arch_lr=0: the architecture's steps would never move it; leave it unset for the optimizer's "
            "own step size, or give a positive one",
            key="search.arch_lr",
        )
    check_auto_blocks(cfg)


def check_auto_blocks(cfg) -> None:
    """``space.searchable: auto:K`` needs a warm-up epoch with architecture steps and an epoch after it, at most
    as many blocks as the network has, and theta's ranking (not perturbation) to decode."""
    from hpcnas.space.searchspace import SearchSpace
    from hpcnas.space.topology import auto_blocks

    se, k = cfg.search, auto_blocks(cfg.space.searchable)
    if k is None:
        return
    key = "space.searchable"
    if se.arch_start_epoch >= se.epochs:
        raise UserError(
            f"auto:{k} picks the blocks after the warm-up epoch search.arch_start_epoch={se.arch_start_epoch}, and "
            f"searches them after it: search.epochs={se.epochs} leaves no epoch for that",
            key=key,
        )
    blocks = SearchSpace.from_config(cfg).roles()
    if k > len(blocks):
        raise UserError(f"auto:{k}, but the network has {len(blocks)} blocks: {', '.join(blocks)}", key=key)
    if se.decode.method != "theta":
        raise UserError(f"auto:{k} decodes by theta; search.decode.method={se.decode.method} is not supported", key=key)


@holds_run_dirs
@stoppable
def search(
    config_path: Optional[str],
    overrides: Sequence[str] = (),
    out: Optional[str] = None,
    resume: Optional[str] = None,
    device: Optional[str] = None,
    plan: bool = False,
    *,
    runs: RunScope,
):
    """``hpcnas search``: continuous search into a run directory; returns (genotype, run_dir).

    With ``plan`` nothing is written: the run's size, memory and step time are printed (``--plan``)."""
    cfg = resolve_config(config_path, overrides, resume)
    from hpcnas.data.hdf5 import read_info
    from hpcnas.distributed import setup, use_cpu_threads
    from hpcnas.runtime import ComputeFormat, select_device
    from hpcnas.search.continuous import SupernetSearch

    ctx = setup()
    use_cpu_threads(ctx.local_size)
    dev = select_device(device or cfg.device)
    if dev.type == "cuda" and ctx.size > 1:
        import torch

        dev = torch.device("cuda", torch.cuda.current_device())  # pinned to the local rank
    ComputeFormat(dev, cfg.search.precision, cfg.search.channels_last, key="search.")  # refused before any write
    check_architecture_budget(cfg)
    if cfg.data.path:
        read_info(cfg.data.path)  # a broken data file is reported before the run directory exists
    if plan:
        from hpcnas.space.searchspace import SearchSpace

        if ctx.size > 1:
            raise UserError("--plan runs as one process: start it without mpirun or srun")
        print_plan(
            cfg,
            lambda run_dir, data_path, info: SupernetSearch(cfg, run_dir, data_path, info, dev, ctx),
            lambda runner: f"search {cfg.space.topology} on {dev} ({runner.format.describe()})",
            stride=SearchSpace.from_config(cfg).stride(),
            batch=cfg.search.batch_size,
            val_every=cfg.search.val_every,
            timed_epoch=max(cfg.search.arch_start_epoch - 1, 0),
            step_note="; an architecture step and a weight step",
        )
        return None, None
    placed, opened = None, None
    if ctx.is_root:  # rank 0 alone creates the run directory and the synthetic data
        opened = open_run(runs, "search", cfg, out, resume, write_config=not resume)
        placed = (str(opened.path), resolve_data(cfg, opened.path))
    run_dir, data_path = ctx.broadcast_object(placed)
    run = opened or Run(Path(run_dir))
    run_dir = run.path
    info = read_info(data_path)
    problem = None
    if ctx.is_root:
        try:
            same_data(run_dir, info, data_path)
        except UserError as exc:
            problem = exc
    problem = ctx.broadcast_object(problem)  # every rank stops, not only the one that looked
    if problem is not None:
        raise problem
    if resume and ctx.is_root:
        dump_config(cfg, RunDir(run_dir).config)
    runner = SupernetSearch(cfg, run, data_path, info, dev, ctx)
    latest = checkpoint_to_resume(run_dir) if resume else None
    if latest is not None:
        runner.restore(latest)  # every rank reads the same file: identical state, nothing to broadcast
        if ctx.is_root:
            log.info("resuming %s at %s", run_dir, runner.resume_point())
    elif resume and ctx.is_root:
        log.info("no checkpoint yet: starting %s from epoch 1", run_dir)
    from hpcnas.space.searchspace import SearchSpace
    from hpcnas.train.plan import memory_estimate

    # on every rank: the trace runs synchronized batch norm's collectives, which all ranks must join
    memory = memory_estimate(
        runner.model, info.channels, info.tile_size, SearchSpace.from_config(cfg).stride(), cfg.search.batch_size
    )
    if ctx.is_root:
        log.info(
            "search %s on %s (%s) x %d rank(s): %s, %d epochs -> %s (supernet: %s parameters, about %s MB peak "
            "per step)",
            cfg.space.topology,
            dev,
            runner.format.describe(),
            ctx.size,
            cfg.search.arch_optimizer,
            cfg.search.epochs,
            run_dir,
            f"{sum(p.numel() for p in runner.model.parameters()):,}",
            f"{memory / 2**20:,.0f}",
        )
    return runner.run(), run_dir


def print_plan(cfg, build, describe, stride: int, batch: int, val_every: int, timed_epoch: int = 0, step_note=""):
    """``--plan``: build the run's loop in a throw-away folder, size it, time a few steps, print the plan."""
    import tempfile

    from hpcnas.data.hdf5 import read_info
    from hpcnas.train.plan import measure_plan

    with tempfile.TemporaryDirectory(prefix="hpcnas-plan-") as tmp:
        data_path = resolve_data(cfg, Path(tmp))
        info = read_info(data_path)
        loop = build(Path(tmp), data_path, info)
        measured = measure_plan(
            loop, describe(loop), info.channels, info.tile_size, stride, batch, val_every, timed_epoch, step_note
        )
    print("\n".join(measured.lines()))


@holds_run_dirs
@stoppable
def train(
    config_path: Optional[str],
    overrides: Sequence[str] = (),
    genotype: Optional[str] = None,
    baseline: Optional[str] = None,
    seed: int = 0,
    out: Optional[str] = None,
    resume: Optional[str] = None,
    device: Optional[str] = None,
    evaluate_split: Optional[str] = None,
    plan: bool = False,
    *,
    runs: RunScope,
):
    """``hpcnas train``: retrain a genotype file, a random cell (``genotype="random"``) or a baseline.

    ``train.channels`` / ``train.target_params`` size the network.  With ``evaluate_split`` the best
    checkpoint is then evaluated on that split
    (full images), into the run's ``evaluation.json``.  With ``plan`` nothing is written: the network's
    size, memory and step time are printed (``--plan``).
    """
    import random

    from hpcnas.data.hdf5 import read_info
    from hpcnas.distributed import launched_size
    from hpcnas.rundir import write_json
    from hpcnas.space.genotype import Genotype
    from hpcnas.space.searchspace import SearchSpace

    if launched_size() > 1:
        raise UserError(
            f"train runs as one process, but this launch started {launched_size()}: give it one task "
            "(slurm/train.sh, hpcnas submit --command train)"
        )
    cfg = resolve_config(config_path, overrides, resume)
    space = SearchSpace.from_config(cfg)
    geno = None
    if not resume:  # bad input is reported before anything is written
        if baseline is not None:
            if baseline != "resnet_unet":
                raise UserError(f"unknown baseline '{baseline}' (known: resnet_unet)", source="--baseline")
        elif genotype == "random":
            geno = space.sample(random.Random(seed))
        elif genotype:
            geno = Genotype.load(genotype)
            space.check(geno, genotype)
        else:
            raise UserError("give --genotype G.json, --genotype random or --baseline resnet_unet")
    if plan:
        if resume:
            raise UserError("--plan describes a new run: give --config and the network, not --resume")
        from hpcnas.distributed import use_cpu_threads
        from hpcnas.runtime import select_device
        from hpcnas.train.spec import model_spec
        from hpcnas.train.trainer import Trainer

        use_cpu_threads()
        dev = select_device(device or cfg.device)

        def build_trainer(run_dir, data_path, info):
            return Trainer(cfg, run_dir, data_path, info, dev, model_spec(cfg, info, geno, source=genotype or "-"))

        print_plan(
            cfg,
            build_trainer,
            lambda trainer: f"train {trainer.spec.name} on {dev} ({trainer.format.describe()})",
            stride=space.stride() if geno is not None else 2**cfg.space.depth,
            batch=cfg.train.batch_size,
            val_every=cfg.train.val_every,
        )
        return None, None
    # config.yaml, which marks a run as started, is written once the model is: a job killed in between starts
    # afresh under --resume-existing instead of meeting a run without model.json
    run = open_run(runs, "train", cfg, out, resume, write_config=False)
    run_dir = run.path
    from hpcnas.distributed import use_cpu_threads
    from hpcnas.runtime import select_device
    from hpcnas.train.spec import ModelSpec, model_spec
    from hpcnas.train.trainer import Trainer

    use_cpu_threads()
    dev = select_device(device or cfg.device)
    data_path = resolve_data(cfg, run_dir)
    info = read_info(data_path)
    same_data(run_dir, info, data_path)
    if resume:
        dump_config(cfg, RunDir(run_dir).config)
        if not RunDir(run_dir).model.exists():
            raise UserError("no model.json: not a training run directory", source=str(run_dir))
        spec = ModelSpec.from_dict(json.loads(RunDir(run_dir).model.read_text()), str(RunDir(run_dir).model))
        if spec.params is None:  # a run started before sizes were recorded
            spec = spec.measured(info.tile_size)
    else:
        spec = model_spec(cfg, info, geno, source=genotype or "<random>")
        write_json(RunDir(run_dir).model, spec.to_dict())
        if geno is not None:
            geno.save(RunDir(run_dir).genotype)
        dump_config(cfg, RunDir(run_dir).config)
    trainer = Trainer(cfg, run, data_path, info, dev, spec)
    latest = checkpoint_to_resume(run_dir) if resume else None
    if latest is not None:
        trainer.restore(latest)
        log.info("resuming %s at %s", run_dir, trainer.resume_point())
    elif resume:
        log.info("no checkpoint yet: starting %s from epoch 1", run_dir)
    from hpcnas.train.plan import memory_estimate

    stride = space.stride() if spec.genotype is not None else 2**cfg.space.depth
    memory = memory_estimate(trainer.model, info.channels, info.tile_size, stride, cfg.train.batch_size)
    log.info(
        "train %s (width %g: %s parameters, %.3g GFLOPs per %d px tile, about %s MB peak per step) on %s: "
        "%d epochs -> %s",
        spec.name,
        spec.width,
        f"{spec.params:,}",
        spec.flops / 1e9,
        info.tile_size,
        f"{memory / 2**20:,.0f}",
        dev,
        cfg.train.epochs,
        run_dir,
    )
    best = trainer.run()
    if evaluate_split:
        from hpcnas.train.evaluate import evaluate as run_evaluation

        run_evaluation(str(RunDir(run_dir).best), data_path, evaluate_split, run_dir, dev)
    return best, run_dir


def evaluate(
    checkpoint: str,
    data: Optional[str] = None,
    split: str = "test",
    out: Optional[str] = None,
    device: Optional[str] = None,
):
    """``hpcnas evaluate``: full-image metrics; defaults to the run's own data and directory."""
    from hpcnas.distributed import use_cpu_threads
    from hpcnas.runtime import select_device
    from hpcnas.train.evaluate import evaluate as run_evaluation

    use_cpu_threads()
    ckpt = Path(checkpoint)
    run_dir = ckpt.parent.parent if RunDir(ckpt.parent.parent).checkpoints == ckpt.parent else ckpt.parent
    if data is None:
        cfg_file = RunDir(run_dir).config
        data = load_config(str(cfg_file)).data.path if cfg_file.exists() else None
        data = data or str(RunDir(run_dir).data)
    target = Path(out) if out else run_dir
    return run_evaluation(str(ckpt), data, split, target, select_device(device or "auto")), target


def predict(
    checkpoint: str,
    source: str,
    out: str,
    options: Any,
    engine: str = "auto",
    device: Optional[str] = None,
) -> "dict[str, int]":
    """``hpcnas predict``: a trained (or exported) network over scenes, class maps and polygons into ``out``.

    No run lock: outputs are per scene and renamed into place when complete,
    so the tasks of a job array, each on its own scenes, share one ``out``.
    """
    from hpcnas.predict.run import predict as predict_scenes

    return predict_scenes(checkpoint, source, out, options, engine=engine, device=device or "auto")


def export(checkpoint: str, fmt: str, out: str, tile: Optional[int] = None) -> "dict[str, Any]":
    """``hpcnas export``: TorchScript or ONNX, kept only if it matches PyTorch on a random batch."""
    from hpcnas.predict.export import export_model

    return export_model(checkpoint, fmt, out, tile)


def pareto(run_dir: str, export: Optional[str] = None) -> "tuple[Any, Optional[Path]]":
    """``hpcnas pareto``: the Pareto front of a discrete search; with ``export``, each member's genotype.json.

    Returns the finished search and the export folder (``None`` without ``--export``).
    """
    from hpcnas.execution.history import read_search
    from hpcnas.rundir import write_json

    if not Path(run_dir).is_dir():
        raise UserError("no such run directory", source=str(run_dir))
    search = read_search(Path(run_dir))
    if search is None:
        raise UserError(
            "holds no discrete search (no history.jsonl): run mpirun ... hpcnas-evolve first", source=str(run_dir)
        )
    if export is None:
        return search, None
    target = Path(export)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError("already exists and is not an empty folder: give a new one", source=str(target))
    front = search.front
    for e in front:
        e.genotype.save(RunDir(target / f"eval-{e.id:05d}").genotype)
    write_json(
        target / "front.json",
        {
            "run": str(search.run_dir),
            "objectives": [str(o) for o in search.objectives],
            "front": [e.to_dict() for e in front],
        },
    )
    return search, target


def score(
    search_run: str,
    genotype_files: Sequence[str] = (),
    random_cells: int = 0,
    first_seed: int = 0,
    tiles: int = 64,
    data: Optional[str] = None,
    device: Optional[str] = None,
) -> "list[dict[str, Any]]":
    """``hpcnas score``: candidate architectures ranked by their perturbation score inside a finished search's
    supernet (:meth:`hpcnas.search.one_shot.TrainedSupernet.perturbation`), highest first. The candidates: the
    search's own genotype (when it has one), ``genotype_files``, and ``random_cells`` random cells drawn with the
    seeds ``first_seed``, ``first_seed + 1``, ..., the cells ``hpcnas train --genotype random --seed S`` trains
    under the search's space. Writes nothing.
    """
    import random

    from hpcnas.space.genotype import Genotype

    run = RunDir(search_run)
    if not Path(search_run).is_dir():
        raise UserError("no such run directory", source=str(search_run))
    if not run.config.is_file() or not run.latest.is_file():
        raise UserError(
            "holds no search supernet (config.yaml and checkpoints/latest.pt): give an hpcnas search run",
            source=str(search_run),
        )
    # a train run has a checkpoint too, of a network that is no supernet; without a heartbeat (an older run), try it
    command = run.heartbeat_record().get("command", "search")
    if command != "search":
        raise UserError(f"is an hpcnas {command} run: give an hpcnas search run", source=str(search_run))
    if random_cells < 0:
        raise UserError(f"must be 0 or more, not {random_cells}", source="--random")
    if tiles < 1:
        raise UserError(f"must be at least 1, not {tiles}", source="--tiles")
    files = ([str(run.genotype)] if run.genotype.is_file() else []) + list(genotype_files)
    candidates = [({"candidate": path, "genotype": path}, Genotype.load(path)) for path in files]
    if not candidates and random_cells == 0:
        raise UserError("nothing to score: the search has no genotype.json yet; give genotype files or --random N")
    from hpcnas.search.one_shot import TrainedSupernet  # torch: only once the input is known to be good

    supernet = TrainedSupernet(Path(search_run), data, max_tiles=tiles, device=device or "auto")
    for seed in range(first_seed, first_seed + random_cells):
        row = {"candidate": f"random cell, seed {seed}", "random_seed": seed}
        candidates.append((row, supernet.space.sample(random.Random(seed))))
    scores = supernet.perturbation([genotype for _, genotype in candidates])
    rows = [dict(row, perturbation=value) for (row, _), value in zip(candidates, scores)]
    rows.sort(key=lambda row: -row["perturbation"])
    return rows


@holds_run_dirs
@stoppable
def evolve(
    config_path: Optional[str],
    overrides: Sequence[str] = (),
    out: Optional[str] = None,
    resume: Optional[str] = None,
    *,
    runs: RunScope,
) -> Optional[Path]:
    """``hpcnas-evolve`` / ``hpcnas evolve``: discrete search on every MPI rank of this job.

    Rank 0 resolves the configuration and the run directory and broadcasts
    them, so only rank 0 writes and only rank 0 reports bad input.
    """
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError("mpi4py is not installed (envs/setup.sh installs it with an MPI)") from None
    from hpcnas.config import from_dict, to_dict
    from hpcnas.execution.orchestrator import check_evolve_config, run_orchestrator

    comm = MPI.COMM_WORLD
    payload, opened = None, None
    if comm.Get_rank() == 0:
        try:
            cfg = resolve_config(config_path, overrides, resume)
            check_evolve_config(cfg, comm.Get_size())
            if cfg.data.path:
                from hpcnas.data.hdf5 import read_info

                read_info(cfg.data.path)
            opened = open_run(runs, "evolve", cfg, out, resume)
            data = resolve_data(cfg, opened.path)
            payload = (to_dict(cfg), str(opened.path.resolve()), data)
        except Exception as exc:
            comm.bcast(None, root=0)
            raise exc
    payload = comm.bcast(payload, root=0)
    if payload is None:  # rank 0 reported the problem
        raise SystemExit(2)
    cfg = from_dict(Config, payload[0], source="<broadcast>")
    run_dir = Path(payload[1])
    outcome, failure = None, None
    try:
        # every rank the same resolved path (as broadcast); rank 0 its heartbeat too
        run = Run(run_dir, opened.heart) if opened is not None else Run(run_dir)
        outcome = run_orchestrator(comm, cfg, run, payload[2])
    except Exception as exc:  # on rank 0: the others must not wait for a verdict that never comes
        failure = exc
    code, stopped_by = comm.bcast((2 if isinstance(failure, UserError) else 1 if failure else 0, outcome), root=0)
    if failure is not None:
        raise failure
    if code:  # rank 0 failed and reports why
        raise SystemExit(code)
    if stopped_by:
        raise Interrupted(run_dir, stopped_by, "with evaluations left")
    return run_dir if comm.Get_rank() == 0 else None
