"""Search quality: does the searched network beat hand design at an equal budget?

Every arm runs on the same HDF5 splits, with the same retraining schedule and
the same selection rule (best validation mIoU from ``train.select_from_epoch``),
then is evaluated on the test split's full images:

* ``A``          search, decode, retrain (the default method), one run per seed;
* ``A-large``    A's genotypes retrained at the default ResNet-UNet's parameter count;
* ``B-default``  the ResNet-UNet at its default size, one run per seed;
* ``B-matched``  the ResNet-UNet sized to the parameter count of A's network of the same seed;
* ``C``          random cells of the same space (cell k drawn with seed k, trained with seed k mod --seeds);
* ``D:<name>``   variants under study (collapse remedies, channel sampling, softmax
                 DARTS, local BatchNorm on several ranks): a search with other settings,
                 or A's (or another variant's) search decoded by another rule, or
                 resumed after its last epoch to select by perturbation, each
                 retrained like A.  A variant with ``ranks`` searches under mpirun with
                 A's batch split over its ranks.

``--arms`` runs a subset of the arms above (e.g. ``--arms A`` with variants,
to compare variants with A only).

The design is paired: seed s fixes the data order, the augmentation and the
initialization of every arm's seed-s run, so two arms differ only in their
architecture.  Each comparison is reported as a difference with a 95 %
bootstrap interval (:func:`paired_differences`), and called beyond noise
only when that interval excludes 0.

    python benchmarks/quality.py --data DATA --preset quick --seeds 3 --out runs/quality [--jobs 2]
    python benchmarks/quality.py --data DATA --preset paper --launcher slurm --out runs/quality-paper

``DATA`` is an HDF5 data set or a folder of images (masks beside them or in
``--masks``; colours mapped by ``--palette``, or ids named by ``--classes``),
which the preset tiles.  Every run is an ordinary ``hpcnas`` command in its
own run directory under ``--out``; a finished run is never redone, so the
same command continues an interrupted benchmark (one launch at a time holds
``OUT/benchmark.lock``; a second is refused).  ``--launcher slurm``
submits each run that is ready as its own job (slurm/search_darts_unet.sh,
slurm/train.sh) and returns; run the same command again once they finish,
until it writes the table.  Writes ``quality.json``, ``quality.md`` and
``quality.png`` into ``--out`` and copies them to ``--results`` with the
command line.  ``--fidelity`` adds Kendall tau between cheap estimates and
the retrained test mIoU: each network's validation mIoU at epochs 1-3 of its
retraining, its zero-cost scores at initialization, and (with arm A) two
estimates inside the trained supernet of A's search with the same seed, for
A's and C's architectures: the one-shot validation mIoU and loss, and the
perturbation score (the supernet's loss rise when each of the architecture's
ops is removed from it alone); and, for each estimate, what retraining only
its top-ranked random cell of each seed gains over those cells' median and
against A's network.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _evolve import mpirun_environment  # noqa: E402 - benchmarks/_evolve.py, beside this script

# Each preset: how the data is tiled, the base config and what overrides it, and the budget.
PRESETS: Dict[str, dict] = {
    # Quick, CPU, about 30 minutes on 2 cores for A, A-large, B, C: a quarter of the resolution, 64 px tiles,
    # a small DARTS-UNet and a few dozen architecture steps (hence Adam's larger learning rate: the paper takes
    # thousands of steps).
    "quick": {
        "tile": {"size": 64, "overlap": 0, "scale": 0.25, "val_fraction": 0.2, "test_fraction": 0.2},
        "config": "configs/darts_unet.yaml",
        "set": [
            "space.channels=8",
            "space.depth=3",
            "space.nodes=3",
            "search.epochs=5",
            "search.batch_size=16",
            "search.max_steps_per_epoch=12",
            "search.arch_start_epoch=2",
            "search.partial_channels=4",
            "search.lr=0.05",
            "train.epochs=6",
            "train.batch_size=16",
            "train.max_steps_per_epoch=20",
            "train.select_from_epoch=3",
            "train.lr=0.05",
            "train.baseline_width=16",
        ],
        "arch_lr": {"adam": 0.03},  # GAEA's default step scales to the search's few steps by itself
        "jobs": 2,
    },
    # The paper's settings (section 5): 512 px tiles with 180 px overlap, configs/darts_unet.yaml unchanged.
    "paper": {
        "tile": {"size": 512, "overlap": 180, "scale": 1.0, "val_fraction": 0.2, "test_fraction": 0.2},
        "config": "configs/darts_unet.yaml",
        "set": [],
        "arch_lr": {},
        "jobs": 1,
    },
}

# Variants under study (arm D): a search with other settings ("search"), or the search of another arm
# decoded by another rule ("decode": the same theta, so no new search), or its genotype retrained with other
# training settings ("retrain": a loss, say), or stopped where DARTS+ would
# stop ("early_stop": the genotype of the epoch before the decoder cell reached N skips, read off the
# search's per-epoch genotypes: the run up to that epoch is the same).
# the searchable ResNet-UNet at B-default's width (the variants below that search it start from these)
PERTURBATION_TILES = 64  # the validation tiles a perturbation measures on: the selection variant's and --fidelity's
RESNET_UNET = ["space.topology=resnet_unet", "space.op_set=O_blocks", "space.cells=per_stage", "space.channels=16"]
VARIANTS: Dict[str, dict] = {
    "random-channels": {
        "kind": "search",
        "set": ["search.channel_sampling=random"],
        "about": "partial channels drawn at random each training call (the default since this benchmark)",
    },
    "shuffle-channels": {
        "kind": "search",
        "set": ["search.channel_sampling=shuffle"],
        "about": "PC-DARTS reference: a fixed C/K slice, then channel_shuffle",
    },
    "darts-minus": {
        "kind": "search",
        "set": ["search.aux_skip=1.0"],
        "about": "DARTS-: auxiliary skip, weight 1 decayed linearly to 0",
    },
    "adam": {
        "kind": "search",
        "set": ["search.arch_optimizer=adam"],
        "about": "softmax DARTS: Adam on logits instead of GAEA",
    },
    "pdarts-cap1": {
        "kind": "decode",
        "base": "A",
        "set": ["search.decode.max_skips=1"],
        "about": "P-DARTS: at most 1 skip in the decoder cell",
    },
    "dartsplus-stop2": {
        "kind": "early_stop",
        "base": "A",
        "skips": 2,
        "about": "DARTS+: stop when the decoder cell holds 2 skips",
    },
    "darts-minus+cap1": {
        "kind": "decode",
        "base": "D:darts-minus",
        "set": ["search.decode.max_skips=1"],
        "about": "DARTS- search, P-DARTS cap of 1 skip",
    },
    "random-channels+cap1": {
        "kind": "decode",
        "base": "D:random-channels",
        "set": ["search.decode.max_skips=1"],
        "about": "random partial channels, P-DARTS cap of 1 skip",
    },
    "random-channels+pfcap": {
        "kind": "decode",
        "base": "D:random-channels",
        "set": ["search.decode.max_parameter_free=0.5"],
        "about": "random partial channels, at most half the decoder's edges parameter-free",
    },
    "pfcap-reduction": {
        "kind": "decode",
        "base": "A",
        "set": ["search.decode.max_parameter_free_reduction=0.5"],
        "about": "A's search, the reduction cells capped too: at most half their edges parameter-free",
    },
    "arch-movement-12": {
        "kind": "search",
        "set": ["search.arch_lr=null", "search.arch_movement=12"],
        "about": "theta's step scaled to the search: a total movement of 12 over its architecture steps, on "
        "gradients divided by their running spread (GAEA's default since this benchmark)",
    },
    "per-stage": {
        "kind": "search",
        "set": ["space.cells=per_stage"],
        "about": "every encoder and decoder level its own theta and genotype cell (the reduction cells too, each "
        "decoded on its own), instead of one reduction and one normal cell shared by every level",
    },
    # NAS inside the hand-designed network (the paper's section 6): the ResNet-UNet at B-default's width, its
    # encoder blocks, skips and decoder convs searched among O_blocks, one choice per level; against B-default
    "resnet-unet": {
        "kind": "search",
        "set": RESNET_UNET,
        "versus": "B-default",
        "about": "the ResNet-UNet of B-default's width with its second encoder block, skip and second decoder conv "
        "at every level searched among 27 block variants (the others' ops hand-designed), against B-default",
    },
    "resnet-unet-auto3": {
        "kind": "search",
        "set": [*RESNET_UNET, "space.searchable=auto:3"],
        "versus": "B-default",
        "about": "as resnet-unet, but only the 3 of its 9 blocks whose theta the warm-up epoch decided most are "
        "searched after it (space.searchable auto:3); the other 6 stay hand-designed",
    },
    "resnet-unet-cost": {
        "kind": "search",
        "set": [*RESNET_UNET, "search.cost.kind=params", "search.cost.weight=0.1"],
        "versus": "B-default",
        "about": "as resnet-unet, with the parameter term in the architecture loss (search.cost params, weight "
        "0.1): the search pays for the weights it adds, to hold B-default's size",
    },
    "fixed-arch-lr-10": {
        "kind": "search",
        "set": ["search.arch_lr=10"],
        "about": "GAEA's fixed step of lr 10 (the quick preset's override before the scaled step)",
    },
    "loss-dice": {
        "kind": "retrain",
        "base": "A",
        "set": ["train.loss=dice"],
        "about": "A's genotypes retrained with the Dice loss",
    },
    "loss-focal": {
        "kind": "retrain",
        "base": "A",
        "set": ["train.loss=focal"],
        "about": "A's genotypes retrained with the focal loss (gamma 2, class-weighted)",
    },
    "loss-ce+dice": {
        "kind": "retrain",
        "base": "A",
        "set": ["train.loss=ce+dice"],
        "about": "A's genotypes retrained with the weighted cross-entropy plus the Dice loss",
    },
    "random-channels+stop2": {
        "kind": "early_stop",
        "base": "D:random-channels",
        "skips": 2,
        "about": "random partial channels, DARTS+ stop at 2 skips",
    },
    # "select": another arm's finished search (its supernet and theta, from its last checkpoint), copied and
    # resumed with these settings, so that only the selection after the last epoch differs.
    "perturbation": {
        "kind": "select",
        "base": "A",
        "set": ["search.decode.method=perturbation", f"search.decode.perturbation_tiles={PERTURBATION_TILES}"],
        "about": "DARTS-PT: A's supernet, each edge's op and each node's inputs chosen by how much removing them "
        f"raises the loss on {PERTURBATION_TILES} validation tiles (4 weight steps after each decision), "
        "A's parameter-free caps on top",
    },
    # Data-parallel searches: "ranks" ranks under mpirun, each with 1/ranks of A's batch, so the global batch and
    # the steps are A's. With synchronized BatchNorm such a search computes what A computes; with local BatchNorm
    # every rank normalizes over its own share of the batch.
    "sync-bn-2ranks": {
        "kind": "search",
        "ranks": 2,
        "set": ["search.sync_batchnorm=true"],
        "about": "2 ranks, half the batch each, BatchNorm statistics over both ranks (A, computed on 2 ranks)",
    },
    "local-bn-2ranks": {
        "kind": "search",
        "ranks": 2,
        "set": ["search.sync_batchnorm=false"],
        "about": "2 ranks, half the batch each, BatchNorm statistics of each rank's own half",
    },
    "local-bn-4ranks": {
        "kind": "search",
        "ranks": 4,
        "set": ["search.sync_batchnorm=false"],
        "about": "4 ranks, a quarter of the batch each, BatchNorm statistics of each rank's own quarter",
    },
}

BASE_ARMS = ("A", "A-large", "B-default", "B-matched", "C")


@dataclass
class Run:
    """One hpcnas command of the benchmark, in its own run directory."""

    name: str  # e.g. "A/seed-0/search"
    arm: str
    command: str  # search | train
    args: Callable[[], List[str]]  # the arguments, computed when the run is started (they may read earlier runs)
    after: List[str] = field(default_factory=list)
    seed: int = 0
    prepare: Optional[Callable[[], None]] = None  # writes what the run reads (a re-decoded genotype)
    ranks: int = 1  # > 1: a data-parallel search under mpirun
    cell: Optional[int] = None  # arm C: the seed its random cell is drawn with (``seed`` is its training seed)

    def out(self, root: Path) -> Path:
        return root / self.name

    def done(self, root: Path) -> bool:
        marker = "genotype.json" if self.command == "search" else "evaluation.json"
        return (self.out(root) / marker).exists()


# --------------------------------------------------------------------------
# the plan


class Plan:
    """Every run of the benchmark and how they depend on each other."""

    def __init__(self, args: argparse.Namespace, data: str):
        self.args, self.data, self.root = args, data, Path(args.out)
        preset = PRESETS[args.preset]
        self.config = str(REPO / preset["config"])
        self.base = list(preset["set"]) + [f"data.path={data}"] + list(args.set)
        self.arch_lr = preset["arch_lr"]
        self.runs: Dict[str, Run] = {}
        seeds = range(args.seeds)
        arms = set(args.arms)
        for s in seeds:
            if "A" in arms:
                self._search_arm("A", s, [])
            if "A-large" in arms:
                self._train(
                    f"A-large/seed-{s}",
                    "A-large",
                    s,
                    genotype=f"A/seed-{s}/search/genotype.json",
                    extra=lambda: [f"train.target_params={self.default_baseline_params()}"],
                )
            if "B-default" in arms:
                self._train(f"B-default/seed-{s}", "B-default", s, baseline=True)
            if "B-matched" in arms:  # paired: sized to the seed's own searched network
                self._train(
                    f"B-matched/seed-{s}",
                    "B-matched",
                    s,
                    baseline=True,
                    extra=lambda s=s: [f"train.target_params={self.trained_params(f'A/seed-{s}/train')}"],
                    after=[f"A/seed-{s}/train"],
                )
        if "C" in arms:
            for k in range(args.random_cells):  # cell k is drawn by seed k and trained like seed k mod seeds
                self._train(f"C/cell-{k}", "C", k % args.seeds, random_cell=True, cell=k)
        for name in args.variants:
            spec = VARIANTS[name]
            arm = f"D:{name}"
            for s in seeds:
                if spec["kind"] == "search":
                    self._search_arm(arm, s, spec["set"], spec.get("ranks", 1))
                elif spec["kind"] == "select":
                    self._select_arm(arm, s, spec)
                else:
                    self._derived(arm, s, spec)

    def _overrides(self, seed: int, extra: List[str]) -> List[str]:
        sets = self.base + [f"seed={seed}"] + list(extra)
        optimizer = next((v.split("=", 1)[1] for v in reversed(sets) if v.startswith("search.arch_optimizer=")), "gaea")
        if optimizer in self.arch_lr and not any(v.startswith("search.arch_lr=") for v in sets):
            sets.append(f"search.arch_lr={self.arch_lr[optimizer]}")
        return sets

    def _cli(self, seed: int, extra: List[str]) -> List[str]:
        out = ["--config", self.config]
        for item in self._overrides(seed, extra):
            out += ["--set", item]
        return out

    def _search_arm(self, arm: str, seed: int, extra: List[str], ranks: int = 1) -> None:
        base = f"{arm.replace(':', '-')}/seed-{seed}"
        search_sets = list(extra)
        if ranks > 1:  # the same global batch as A's, split over the ranks
            from hpcnas.config import load_config

            batch = load_config(self.config, self._overrides(seed, extra)).search.batch_size
            if batch % ranks:
                raise SystemExit(f"quality: error: {arm}: search.batch_size={batch} does not split over {ranks} ranks")
            search_sets.append(f"search.batch_size={batch // ranks}")
        search = Run(f"{base}/search", arm, "search", lambda: self._cli(seed, search_sets), seed=seed, ranks=ranks)
        self._search_then_train(search, extra)

    def _select_arm(self, arm: str, seed: int, spec: dict) -> None:
        """A copy of the base arm's finished search, resumed with the variant's settings (its selection), then
        retrained like A."""
        base = f"{arm.replace(':', '-')}/seed-{seed}"
        source = f"{spec['base'].replace(':', '-')}/seed-{seed}/search"
        target = self.root / base / "search"

        def prepare() -> None:
            if not (target / "config.yaml").exists():
                copy_finished_search(self.root / source, target)

        self._search_then_train(
            Run(f"{base}/search", arm, "search", lambda: self._cli(seed, spec["set"]), [source], seed, prepare),
            spec["set"],
        )

    def _search_then_train(self, search: Run, search_sets: List[str]) -> None:
        """A search run, and the retraining of the genotype it writes (with the search's settings)."""
        self.runs[search.name] = search
        base = search.name.rsplit("/", 1)[0]
        self._train(
            f"{base}/train",
            search.arm,
            search.seed,
            genotype=f"{search.name}/genotype.json",
            after=[search.name],
            search_sets=search_sets,
        )

    def _train(
        self,
        name: str,
        arm: str,
        seed: int,
        genotype: Optional[str] = None,
        baseline: bool = False,
        random_cell: bool = False,
        extra: Optional[Callable[[], List[str]]] = None,
        after: Optional[List[str]] = None,
        search_sets: List[str] = (),
        prepare=None,
        cell: Optional[int] = None,
    ) -> None:
        after = list(after or [])
        if genotype and not after:
            after.append(str(Path(genotype).parent))

        def args() -> List[str]:
            which = (
                ["--baseline", "resnet_unet"]
                if baseline
                else ["--genotype", "random", "--seed", str(cell)]
                if random_cell
                else ["--genotype", str(self.root / genotype)]
            )
            return which + self._cli(seed, list(search_sets) + (extra() if extra else [])) + ["--evaluate", "test"]

        self.runs[name] = Run(name, arm, "train", args, after, seed, prepare, cell=cell)

    def _derived(self, arm: str, seed: int, spec: dict) -> None:
        base_arm = spec["base"]
        search_dir = self.root / f"{base_arm.replace(':', '-')}/seed-{seed}/search"
        name = f"{arm.replace(':', '-')}/seed-{seed}"
        if spec["kind"] == "retrain":
            self._train(
                f"{name}/train",
                arm,
                seed,
                genotype=str((search_dir / "genotype.json").relative_to(self.root)),
                search_sets=spec["set"],
            )
            return
        genotype = f"{name}/genotype.json"

        def prepare() -> None:
            derive_genotype(
                search_dir, spec, self.config, self._overrides(seed, spec.get("set", [])), self.root / genotype
            )

        self._train(
            f"{name}/train",
            arm,
            seed,
            genotype=genotype,
            after=[str(search_dir.relative_to(self.root))],
            prepare=prepare,
        )

    # numbers that runs read from earlier runs

    def default_baseline_params(self) -> int:
        """Parameters of the ResNet-UNet at this benchmark's default width (what A-large is sized to)."""
        from hpcnas.config import load_config
        from hpcnas.data.hdf5 import read_info
        from hpcnas.train.baselines import ResNetUNet
        from hpcnas.train.complexity import count_parameters

        cfg = load_config(self.config, self._overrides(0, []))

        info = read_info(self.data)
        return count_parameters(
            ResNetUNet(
                info.channels, info.num_classes, cfg.train.baseline_width, cfg.space.depth, cfg.train.baseline_blocks
            )
        )

    def trained_params(self, name: str) -> int:
        """The parameter count of a finished run's network."""
        return int(json.loads((self.root / name / "model.json").read_text())["params"])


def derive_genotype(search_dir: Path, spec: dict, config: str, overrides: List[str], target: Path) -> None:
    """A variant's genotype from another arm's finished search: re-decoded, or where DARTS+ would have stopped."""
    from hpcnas.config import load_config
    from hpcnas.rundir import read_jsonl
    from hpcnas.search.decode import darts_plus_stops, decode_configured, snapshot_from_json
    from hpcnas.space.genotype import Genotype

    if spec["kind"] == "decode":
        cfg = load_config(config, overrides)
        genotype = decode_configured(cfg, snapshot_from_json(json.loads((search_dir / "arch.json").read_text())))
    else:
        cfg = load_config(str(search_dir / "config.yaml"))
        records = read_jsonl(search_dir / "metrics.jsonl")
        genotype = Genotype.from_dict(records[-1]["genotype"])
        for before, record in zip([None] + records, records):
            g = Genotype.from_dict(record["genotype"])
            if darts_plus_stops(
                g, record["epoch"], cfg.search.arch_start_epoch, spec["skips"]
            ):  # the search's own rule
                genotype = Genotype.from_dict(before["genotype"]) if before else g
                break
    target.parent.mkdir(parents=True, exist_ok=True)
    genotype.save(target)


def copy_finished_search(source: Path, target: Path) -> None:
    """``source``'s run directory at ``target`` without its genotype, lock, heartbeat and TensorBoard files, so
    that resuming it runs only the end of the search (the selection); renamed into place, so a kill leaves no
    half copy that would look like a run."""
    partial = target.with_name(f".{target.name}.copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("genotype.json", ".lock", "heartbeat.json", "tb"))
    partial.rename(target)


# --------------------------------------------------------------------------
# running the plan


def hpcnas_command(run: Run, root: Path) -> List[str]:
    launch = (
        [shutil.which("mpirun") or "mpirun", "-np", str(run.ranks), "-x", "OMP_NUM_THREADS"] if run.ranks > 1 else []
    )
    return launch + [
        str(Path(sys.executable).parent / "hpcnas"),
        run.command,
        *run.args(),
        "--out",
        str(run.out(root)),
        "--resume-existing",
    ]


def run_local(plan: Plan, jobs: int, log) -> Dict[str, float]:
    """Run every run not yet done, ``jobs`` at a time, each with its share of the cores; returns wall seconds."""
    root = plan.root
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    # A data-parallel search takes a job slot per rank (all of them at most) and may be oversubscribed, so
    # its ranks yield the core while they wait instead of spinning (this changes its speed, not its result).
    mpi_env = {"OMPI_MCA_mpi_yield_when_idle": "1", **mpirun_environment(), **env}
    pending = [r for r in plan.runs.values() if not r.done(root)]
    failed: set = set()
    running: Dict[str, tuple] = {}
    walls = load_walls(root)
    while pending or running:
        for name, (proc, t0, run) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode == 0 and run.done(root):
                walls[name] = round(time.time() - t0, 1)
                save_walls(root, walls)
                log(f"done   {name} ({walls[name]:.0f} s)")
            else:
                failed.add(name)
                log(f"FAILED {name} (exit {proc.returncode}): see {run.out(root)}/log.txt and {root}/logs/")
        for run in list(pending):
            busy = sum(min(r.ranks, jobs) for _, _, r in running.values())
            if busy + min(run.ranks, jobs) > jobs:
                continue
            if any(d in failed for d in run.after):
                pending.remove(run)
                failed.add(run.name)
                log(f"skip   {run.name}: a run it needs failed")
                continue
            if not all(
                plan.runs[d].done(root) if d in plan.runs else (root / d / "genotype.json").exists() for d in run.after
            ):
                continue
            pending.remove(run)
            if run.prepare:
                run.prepare()
            cmd = hpcnas_command(run, root)
            logs = root / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            out = open(logs / (run.name.replace("/", "_") + ".txt"), "a")
            out.write("$ " + shlex.join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=mpi_env if run.ranks > 1 else env, cwd=REPO
            )
            running[run.name] = (proc, time.time(), run)
            log(f"start  {run.name}")
        time.sleep(0.5)
    if failed:
        log(f"{len(failed)} run(s) failed or were skipped: {', '.join(sorted(failed))}")
    return walls


def run_slurm(plan: Plan, log) -> bool:
    """Submit each run that is ready and not yet submitted; True when every run is done."""
    root = plan.root
    state_path = root / "slurm_jobs.json"
    submitted = json.loads(state_path.read_text()) if state_path.exists() else {}
    scripts = {"search": REPO / "slurm" / "search_darts_unet.sh", "train": REPO / "slurm" / "train.sh"}
    for run in plan.runs.values():
        if run.done(root) or run.name in submitted:
            continue
        if not all(
            plan.runs[d].done(root) if d in plan.runs else (root / d / "genotype.json").exists() for d in run.after
        ):
            continue
        if run.prepare:
            run.prepare()
        cmd = [
            "sbatch",
            "--parsable",
            f"--job-name=q-{run.arm.replace(':', '-')}",
            f"--output={root}/logs/%x-%j.out",
            *(["--nodes=1", f"--ntasks-per-node={run.ranks}"] if run.ranks > 1 else []),
            *plan.args.sbatch_arg,
            str(scripts[run.command]),
            *run.args(),
            "--out",
            str(run.out(root)),
        ]
        (root / "logs").mkdir(parents=True, exist_ok=True)
        job = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if job.returncode:
            raise SystemExit(f"quality: error: sbatch refused {run.name}: {job.stderr.strip()}")
        submitted[run.name] = job.stdout.strip().split(";")[0]
        log(f"submitted {run.name} as job {submitted[run.name]}")
        state_path.write_text(json.dumps(submitted, indent=2) + "\n")
    left = [r.name for r in plan.runs.values() if not r.done(root)]
    if left:
        log(f"{len(left)} run(s) not finished yet: run this command again when the jobs have ended")
    return not left


def hold_benchmark_lock(root: Path):
    """An exclusive lock on ``root/benchmark.lock``, held until this process exits; None when another holds it.

    Two launches on one folder would start the same unfinished runs twice and overwrite each other's walls.
    """
    handle = open(root / "benchmark.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def load_walls(root: Path) -> Dict[str, float]:
    path = root / "walls.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_walls(root: Path, walls: Dict[str, float]) -> None:
    (root / "walls.json").write_text(json.dumps(walls, indent=2) + "\n")


# --------------------------------------------------------------------------
# results


def run_row(plan: Plan, run: Run, walls: Dict[str, float]) -> Optional[dict]:
    """One trained network's figures, with the search it came from."""
    from hpcnas.rundir import read_jsonl
    from hpcnas.space.genotype import Genotype

    out = run.out(plan.root)
    if not run.done(plan.root):
        return None
    ev = json.loads((out / "evaluation.json").read_text())
    model = json.loads((out / "model.json").read_text())
    class_names = model["class_names"]
    fg = [ev[f"iou_{c}"] for c in class_names[1:] if ev.get(f"iou_{c}") is not None]
    p, r = ev["objects"]["precision"][4], ev["objects"]["recall"][4]
    search = [d for d in run.after if d.endswith("/search")]
    wall = run_seconds(plan.root, run.name, walls) + sum(run_seconds(plan.root, d, walls) for d in search)
    row = {
        "arm": run.arm,
        "run": run.name,
        "seed": run.seed,  # the training seed: data order, augmentation, initialization
        "cell": run.cell,
        "test_miou": ev["miou"],
        "foreground_iou": sum(fg) / len(fg) if fg else None,
        "object_f1_0.5": 2 * p * r / (p + r) if p + r else 0.0,
        "params": model["params"],
        "flops": model["flops"],
        "wall_s": wall,
        "val_miou_by_epoch": [m.get("val_miou") for m in read_jsonl(out / "metrics.jsonl")],
    }
    row["epoch1_val_miou"] = next(iter(row["val_miou_by_epoch"]), None)
    target = ((yaml.safe_load((out / "config.yaml").read_text()) or {}).get("train") or {}).get("target_params")
    if target:
        row["target_params"] = target
    if model.get("genotype"):
        g = Genotype.from_dict(model["genotype"])
        row["parameter_free"] = g.parameter_free_fraction()
        row["genotype"] = g.describe()
    return row


def run_seconds(root: Path, name: str, walls: Dict[str, float]) -> float:
    """A run's wall time: as measured by the local launcher, else its epochs' own times (a SLURM job)."""
    from hpcnas.rundir import read_jsonl

    if name in walls:
        return walls[name]
    return float(sum(r.get("time_s", 0.0) for r in read_jsonl(root / name / "metrics.jsonl")))


def aggregate(rows: List[dict]) -> List[dict]:
    """Mean and standard deviation per arm (median too, for the random cells)."""
    arms: Dict[str, List[dict]] = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    out = []
    for arm, rs in arms.items():
        entry = {"arm": arm, "n": len(rs)}
        for key in ("test_miou", "foreground_iou", "object_f1_0.5", "params", "flops", "wall_s", "parameter_free"):
            values = [r[key] for r in rs if r.get(key) is not None]
            if values:
                entry[key] = statistics.fmean(values)
                entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["test_miou_median"] = statistics.median(r["test_miou"] for r in rs)
        out.append(entry)
    return out


def markdown(summary: List[dict], command: str, preset: str, paired: List[dict], rows: List[dict]) -> str:
    lines = [
        f"# Search quality ({preset} preset)",
        "",
        f"`{command}`",
        "",
        "Mean ± standard deviation over seeds (random cells: over cells); *vs C* is the arm's mean test mIoU "
        "minus the median random cell's.",
        "",
        "| arm | n | test mIoU | vs C | foreground IoU | object F1@0.5 | params | GFLOPs/tile | wall s | "
        "param-free ops |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    random_median = next((e["test_miou_median"] for e in summary if e["arm"] == "C"), None)

    def pm(e, key, fmt="{:.3f}"):
        if key not in e:
            return "-"
        return fmt.format(e[key]) + " ± " + fmt.format(e[f"{key}_std"])

    for e in summary:
        versus = f"{e['test_miou'] - random_median:+.3f}" if random_median is not None else "-"
        lines.append(
            f"| {e['arm']} | {e['n']} | {pm(e, 'test_miou')} | {versus} | {pm(e, 'foreground_iou')} | "
            f"{pm(e, 'object_f1_0.5')} | {e['params']:,.0f} | {e['flops'] / 1e9:.3g} | {e['wall_s']:.0f} | "
            + (f"{e['parameter_free']:.2f}" if "parameter_free" in e else "-")
            + " |"
        )
    if paired:
        lines += [
            "",
            "Paired differences of test mIoU, with 95 % bootstrap intervals (seed s trains every arm on the same "
            "data order, augmentation and initialization):",
            "",
            *paired_lines(paired),
        ]
    sized = [r for r in rows if r["arm"] == "B-matched" and r.get("target_params")]
    if sized:
        worst = max(abs(r["params"] / r["target_params"] - 1) for r in sized)
        lines += ["", f"B-matched: parameters within {100 * worst:.1f} % of each seed's A network."]
    return "\n".join(lines) + "\n"


def paired_differences(rows: List[dict], boot: int = 10_000, min_seeds: int = 3) -> List[dict]:
    """Each comparison as a difference of mean test mIoU with a 95 % percentile bootstrap interval.

    Runs of two arms with the same seed saw the same data order, augmentation and initialization, so a
    difference is taken seed by seed and the seeds are resampled (A - B-matched, A-large - B-default and
    each variant - A).  Against the random cells (A - median C) the seeds are resampled with the cells
    trained under them, which keeps that pairing and also samples which cells were drawn.  A verdict says
    "beyond noise" only when the interval excludes 0 and at least ``min_seeds`` seeds were paired.
    """
    by_seed: Dict[str, Dict[int, float]] = {}
    for row in rows:
        if row["arm"] != "C":
            by_seed.setdefault(row["arm"], {})[row["seed"]] = row["test_miou"]
    cells = [(row["seed"], row["test_miou"]) for row in rows if row["arm"] == "C"]
    rng = np.random.default_rng(0)
    out = []
    if "A" in by_seed and cells:
        out.append(versus_random_cells(by_seed["A"], cells, rng, boot, min_seeds))
    comparisons = [("A", "B-matched"), ("A-large", "B-default")]
    comparisons += [(arm, VARIANTS.get(arm[2:], {}).get("versus", "A")) for arm in by_seed if arm.startswith("D:")]
    for mine, other in comparisons:
        common = sorted(set(by_seed.get(mine, {})) & set(by_seed.get(other, {})))
        if not common:
            continue
        d = np.array([by_seed[mine][s] - by_seed[other][s] for s in common])
        draws = d[rng.integers(0, len(d), (boot, len(d)))].mean(axis=1)
        out.append(difference_entry(f"{mine} - {other}", float(d.mean()), draws, len(common), 0, min_seeds))
    return out


def versus_random_cells(a: Dict[int, float], cells: List[tuple], rng, boot: int, min_seeds: int) -> dict:
    """mean(A) - median(C), resampling A's seeds together with the cells trained under each."""
    seeds = sorted(a)
    under = {s: [v for t, v in cells if t == s] for s in seeds}
    paired = all(t in a for t, _ in cells)
    draws = np.empty(boot)
    for b in range(boot):
        chosen = rng.choice(seeds, len(seeds))
        if paired:
            pool = [v for s in chosen for v in rng.choice(under[s], len(under[s])) if under[s]] or [v for _, v in cells]
        else:  # cells trained under seeds A lacks: resample them on their own
            pool = list(rng.choice([v for _, v in cells], len(cells)))
        draws[b] = np.mean([a[s] for s in chosen]) - np.median(pool)
    estimate = statistics.fmean(a.values()) - statistics.median(v for _, v in cells)
    return difference_entry("A - median C", estimate, draws, len(seeds), len(cells), min_seeds)


def difference_entry(name: str, estimate: float, draws, seeds: int, cells: int, min_seeds: int) -> dict:
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    if seeds < min_seeds:
        verdict = f"too few seeds to tell (fewer than {min_seeds})"
    elif low > 0:
        verdict = "beyond noise (above 0)"
    elif high < 0:
        verdict = "beyond noise (below 0)"
    else:
        verdict = "within noise"
    return {
        "comparison": name,
        "difference": estimate,
        "ci95": [low, high],
        "seeds": seeds,
        "cells": cells,
        "verdict": verdict,
    }


def paired_lines(paired: List[dict]) -> List[str]:
    """The paired differences as markdown list items."""
    lines = []
    for p in paired:
        n = f"{p['seeds']} seeds" + (f", {p['cells']} cells" if p["cells"] else "")
        low, high = p["ci95"]
        lines.append(f"- {p['comparison']}: {p['difference']:+.4f} [{low:+.4f}, {high:+.4f}] ({n}): {p['verdict']}")
    return lines


def figure(rows: List[dict], summary: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [e["arm"] for e in summary]
    colors = {a: plt.cm.tab20(i % 20) for i, a in enumerate(arms)}  # one colour per arm in both panels
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1.2, 1]})
    data = [[r["test_miou"] for r in rows if r["arm"] == a] for a in arms]
    ax1.boxplot(data, showfliers=False)
    ax1.set_xticks(range(1, len(arms) + 1), arms, rotation=45, ha="right", fontsize=8)
    for i, (a, values) in enumerate(zip(arms, data), start=1):
        ax1.plot([i] * len(values), values, "o", color=colors[a], alpha=0.8)
    ax1.set(ylabel="test mIoU (full images)", title="test mIoU per arm")
    for a in arms:
        rs = [r for r in rows if r["arm"] == a]
        ax2.scatter([r["params"] for r in rs], [r["test_miou"] for r in rs], label=a, color=colors[a], alpha=0.8)
    ax2.set(xscale="log", xlabel="parameters", ylabel="test mIoU", title="size against quality")
    ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PROXY_EPOCHS = (2, 3)  # besides epoch 1: proxies of up to half the quick preset's 6 training epochs


def fidelity(plan: Plan, rows: List[dict], boot: int = 1000) -> dict:
    """Kendall tau between cheap estimates and the retrained test mIoU, with a bootstrap 95% interval."""
    import numpy as np
    from scipy.stats import kendalltau
    from zero_cost import zero_cost_scores  # benchmarks/zero_cost.py, beside this script

    cells = [r for r in rows if "genotype" in r and r["arm"] not in ("A-large",)]
    by_epoch = [r["val_miou_by_epoch"] for r in cells]
    estimates = {"epoch-1 val mIoU (short training)": [e[0] if e else None for e in by_epoch]}
    for k in PROXY_EPOCHS:  # the retraining's own epoch k: a k-epoch proxy, but on the full run's LR schedule
        estimates[f"epoch-{k} val mIoU of the retraining"] = [e[k - 1] if len(e) >= k else None for e in by_epoch]
    scores = [zero_cost_scores(plan.runs[r["run"]].out(plan.root), plan.data) for r in cells]
    for key in scores[0]:
        estimates[key] = [s[key] for s in scores]
    one_shot = one_shot_estimates(plan, cells)
    estimates["one-shot val mIoU (A's supernet of the same seed)"] = [o and o[0].miou for o in one_shot]
    estimates["one-shot val loss, negated (A's supernet of the same seed)"] = [o and -o[0].loss for o in one_shot]
    estimates["perturbation score (A's supernet of the same seed)"] = [o and o[1] for o in one_shot]
    out: Dict[str, object] = {"architectures": len(cells)}
    out["values"] = [  # each architecture's estimates beside its truth: one flat record per network
        {"run": r["run"], "arm": r["arm"], "test_miou": r["test_miou"], **{k: v[i] for k, v in estimates.items()}}
        for i, r in enumerate(cells)
    ]
    for name, values in estimates.items():
        rng = np.random.default_rng(0)  # each estimate its own draws: adding one leaves the others' intervals
        pairs = [(v, r["test_miou"]) for v, r in zip(values, cells) if v is not None]
        if len(pairs) < 3:
            continue
        v, truth = (np.array(column, dtype=float) for column in zip(*pairs))
        tau = float(kendalltau(v, truth).statistic)
        taus = []
        for _ in range(boot):
            idx = rng.integers(0, len(v), len(v))
            t = kendalltau(v[idx], truth[idx]).statistic
            if not np.isnan(t):
                taus.append(t)
        out[name] = {
            "tau": tau,
            "ci95": [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))],
            "architectures": len(v),
        }
    out["shortlist"] = shortlist(cells, estimates, boot=10 * boot)
    return out


def shortlist(cells: List[dict], estimates: Dict[str, list], boot: int) -> List[dict]:
    """What choosing by an estimate gains: under each seed, the random cell trained with it that the estimate
    ranks highest, against the median of those cells and against A's network of that seed (paired by seed,
    the seeds resampled). A tau says how well an estimate orders; this says what a user who retrains only its
    top pick gets."""
    a = {r["seed"]: r["test_miou"] for r in cells if r["arm"] == "A"}
    out = []
    for name, values in estimates.items():
        pools: Dict[int, List[tuple]] = {}
        for value, row in zip(values, cells):
            if row["arm"] == "C" and value is not None and not np.isnan(value):  # NaN: no rank to take
                pools.setdefault(row["seed"], []).append((value, row["test_miou"]))
        seeds = sorted(s for s, pool in pools.items() if len(pool) >= 2)
        if len(seeds) < 3:
            continue
        top = {}
        for s in seeds:  # cells the estimate ties at the top count as one pick: their mean
            best = max(value for value, _ in pools[s])
            top[s] = statistics.fmean(m for value, m in pools[s] if value == best)
        against = {"median C": {s: statistics.median(m for _, m in pools[s]) for s in seeds}}
        if all(s in a for s in seeds):
            against["A"] = a
        for other, values_by_seed in against.items():
            d = np.array([top[s] - values_by_seed[s] for s in seeds])
            rng = np.random.default_rng(0)
            draws = d[rng.integers(0, len(d), (boot, len(d)))].mean(axis=1)
            entry = difference_entry(f"top C by {name} - {other}", float(d.mean()), draws, len(seeds), 0, 3)
            out.append(dict(entry, cells=sum(len(pools[s]) for s in seeds)))
    return out


def one_shot_estimates(plan: Plan, cells: List[dict]) -> list:
    """Each arm-A and arm-C architecture's figures inside the trained supernet of A's search with its training
    seed, the weights inherited (``hpcnas.search.one_shot``): its one-shot validation figures and its perturbation
    score, as a pair; None for the others and without arm A. Each supernet is loaded once for every architecture
    it scores on the whole validation split, and once more for the perturbation's tiles (a load costs a fraction
    of one validation)."""
    from hpcnas.search.one_shot import TrainedSupernet
    from hpcnas.space.genotype import Genotype

    by_supernet: Dict[Path, List[int]] = {}
    for i, row in enumerate(cells):
        supernet = plan.root / f"A/seed-{row['seed']}/search"
        if row["arm"] in ("A", "C") and (supernet / "genotype.json").exists():
            by_supernet.setdefault(supernet, []).append(i)
    estimates: list = [None] * len(cells)
    for supernet, indices in by_supernet.items():
        models = [json.loads((plan.runs[cells[i]["run"]].out(plan.root) / "model.json").read_text()) for i in indices]
        genotypes = [Genotype.from_dict(m["genotype"]) for m in models]
        one_shot = TrainedSupernet(supernet, plan.data).one_shot(genotypes)
        perturbation = TrainedSupernet(supernet, plan.data, max_tiles=PERTURBATION_TILES).perturbation(genotypes)
        for i, pair in zip(indices, zip(one_shot, perturbation)):
            estimates[i] = pair
    return estimates


# --------------------------------------------------------------------------


def prepare_data(args: argparse.Namespace, log) -> str:
    """The HDF5 data set: ``--data`` itself, or the preset's tiling of the image folder into OUT/data.h5."""
    data = Path(args.data)
    if data.is_file():
        return str(data.resolve())
    target = Path(args.out) / "data.h5"
    if not target.exists():
        from hpcnas.data.tile import tile_folder

        t = PRESETS[args.preset]["tile"]
        target.parent.mkdir(parents=True, exist_ok=True)
        counts = tile_folder(
            data,
            Path(args.masks) if args.masks else data,
            target,
            t["size"],
            t["overlap"],
            palette=args.palette,
            class_names=args.classes,
            scale=t["scale"],
            val_fraction=t["val_fraction"],
            test_fraction=t["test_fraction"],
            stratify=True,
        )
        log(f"tiled {data} -> {target}: {counts}")
    return str(target.resolve())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="HDF5 data set, or a folder of images and masks to tile")
    parser.add_argument(
        "--palette",
        default=None,
        help="mask palette when --data is a folder of colour masks (default without --classes: the Dubai "
        "building palette)",
    )
    parser.add_argument("--masks", default=None, help="folder of the masks when --data is a folder (default: --data)")
    parser.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names when the masks hold class ids (0 = the first), e.g. background,vehicle",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of A, A-large, B and each variant (default 5)")
    parser.add_argument("--random-cells", type=int, default=8, help="random cells in arm C (default 8)")
    parser.add_argument(
        "--arms",
        default=",".join(BASE_ARMS),
        help=f"comma-separated arms besides the variants (default all: {','.join(BASE_ARMS)}; 'none' for none)",
    )
    parser.add_argument(
        "--variants",
        default="none",
        help=f"comma-separated arm D variants, 'all' or 'none' (known: {', '.join(VARIANTS)})",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--out", required=True, help="the benchmark's folder (run directories, logs, results)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time on this machine (default: the preset's)")
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local")
    parser.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="with --launcher slurm: one more sbatch option for every job, e.g. --sbatch-arg=--time=2:00:00",
    )
    parser.add_argument("--fidelity", action="store_true", help="Kendall tau of cheap estimates against test mIoU")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"), help="where the tables are copied")
    parser.add_argument("--tag", default=None, help="name of the copies: quality-TAG.* (default: the preset)")
    args = parser.parse_args()
    if args.classes and args.palette:
        parser.error("give --palette (colour masks) or --classes (masks of class ids), not both")
    if args.classes:
        args.classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if len(args.classes) < 2:
            parser.error("--classes needs at least two names (the background and a class)")
    elif not args.palette:
        args.palette = str(REPO / "configs" / "palettes" / "dubai_building.yaml")
    if args.seeds < 1 or args.random_cells < 0:
        parser.error("--seeds must be >= 1 and --random-cells >= 0")
    if args.variants == "all":
        args.variants = list(VARIANTS)
    elif args.variants == "none":
        args.variants = []
    else:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    args.arms = [] if args.arms == "none" else [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in BASE_ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)} (known: {', '.join(BASE_ARMS)})")
    needs_a = [a for a in ("A-large", "B-matched") if a in args.arms]
    needs_a += [f"D:{v}" for v in args.variants if VARIANTS[v].get("base") == "A"]
    if needs_a and "A" not in args.arms:
        parser.error(f"{', '.join(needs_a)} need(s) arm A")
    for name in args.variants:
        versus = VARIANTS[name].get("versus")
        if versus and versus not in args.arms:
            parser.error(f"D:{name} is compared with arm {versus}: add it to --arms")
    for name in args.variants:  # a derived variant needs the arm it derives from
        base = VARIANTS[name].get("base", "A")
        if base.startswith("D:") and base[2:] not in args.variants:
            args.variants.insert(0, base[2:])
    args.variants = list(dict.fromkeys(args.variants))
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    lock = hold_benchmark_lock(root)
    if lock is None:
        parser.error(f"another launch of this benchmark is running on {root} (it holds {root}/benchmark.lock)")
    started = time.time()

    def log(message: str) -> None:
        line = f"[quality {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(root / "benchmark.log", "a") as fh:
            fh.write(line + "\n")

    command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:])
    log(command)
    data = prepare_data(args, log)
    plan = Plan(args, data)
    if args.launcher == "slurm":
        if not run_slurm(plan, log):
            return 0
        walls = load_walls(root)
    else:
        walls = run_local(plan, args.jobs or PRESETS[args.preset]["jobs"], log)
    rows = [row for run in plan.runs.values() if run.command == "train" for row in [run_row(plan, run, walls)] if row]
    summary = aggregate(rows)
    paired = paired_differences(rows)
    payload = {
        "command": command,
        "preset": args.preset,
        "data": data,
        "seeds": args.seeds,
        "variants": {v: VARIANTS[v]["about"] for v in args.variants},
        "runs_wall_s": round(sum(run_seconds(root, name, walls) for name in plan.runs), 1),  # one run after another
        "this_invocation_s": round(time.time() - started, 1),
        "summary": summary,
        "paired": paired,
        "rows": rows,
    }
    if args.fidelity:
        payload["fidelity"] = fidelity(plan, rows)
    (root / "quality.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = markdown(summary, command, args.preset, paired, rows)
    if args.variants:
        text += "\nVariants:\n\n" + "".join(f"- D:{v}: {VARIANTS[v]['about']}\n" for v in args.variants)
    if "fidelity" in payload:
        text += "\nFidelity (Kendall tau against test mIoU, bootstrap 95% interval):\n\n"
        text += "".join(
            f"- {k}: {v['tau']:+.2f} [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}] ({v['architectures']} architectures)\n"
            for k, v in payload["fidelity"].items()
            if isinstance(v, dict)
        )
        text += (
            "\nChoosing by an estimate (under each seed, the random cell it ranks highest among those trained with"
            " that seed, paired by seed):\n\n"
        )
        text += "".join(line + "\n" for line in paired_lines(payload["fidelity"]["shortlist"]))
    (root / "quality.md").write_text(text)
    figure(rows, summary, root / "quality.png")
    print(text)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    tag = args.tag or args.preset
    for suffix in ("json", "md", "png"):
        (results / f"quality-{tag}.{suffix}").write_bytes((root / f"quality.{suffix}").read_bytes())
    log(f"wrote {root}/quality.{{json,md,png}} and {results}/quality-{tag}.*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
