"""Command line: argument parsing only; every subcommand calls one function.

Heavy modules (torch above all) are imported inside the command functions, so
``hpcnas --help`` and the MPI dispatcher start without them.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, List, Optional

from hpcnas import __version__
from hpcnas.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_RESUMABLE, Interrupted, SearchFailed, UserError, say
from hpcnas.rundir import SUMMARY, RunDir
from hpcnas.signals import STOP, ignore_stop_signals

log = logging.getLogger("hpcnas")


# --------------------------------------------------------------------------
# command functions: each turns parsed arguments into one library call


def cmd_data_synth(args: argparse.Namespace) -> None:
    from hpcnas.data.synth import synthesize

    counts = synthesize(
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " patches")


def cmd_data_tile(args: argparse.Namespace) -> None:
    from hpcnas.data.raster import parse_bands
    from hpcnas.data.tile import tile_folder

    classes = args.classes.split(",") if args.classes else None
    counts = tile_folder(
        args.images,
        args.masks,
        args.out,
        size=args.size,
        overlap=args.overlap,
        palette=args.palette,
        class_names=classes,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        limit=args.limit,
        scale=args.scale,
        stratify=args.stratify,
        bands=parse_bands(args.bands),
    )
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " patches")


def cmd_checkpoint_upgrade(args: argparse.Namespace) -> None:
    from hpcnas.checkpoint import upgrade_checkpoint

    for path in args.files:
        print(f"{path}: {upgrade_checkpoint(path)}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from hpcnas.data.hdf5 import check_class_ids, describe_scenes, read_info

    info = read_info(args.file)
    check_class_ids(info)  # the one command that reads every mask: a data set it passes trains to the end
    print(
        f"{info.path}: tile {info.tile_size} px, overlap {info.overlap} px, {info.channels} channels ({info.dtype}"
        + (f", bands {','.join(map(str, info.bands))}" if info.bands else "")
        + ")"
    )
    norm = info.normalization
    if norm is not None and info.dtype != "uint8":
        print("normalization (train split): " + ", ".join(f"({o:g}, {s:g})" for o, s in zip(norm.offset, norm.scale)))
    print("patches: " + ", ".join(f"{k} {v}" for k, v in info.split_sizes.items()))
    print("\n".join(describe_scenes(info)))
    total = max(1, int(info.class_pixels.sum()))
    for name, px, w in zip(info.class_names, info.class_pixels, info.class_weights):
        print(f"  {name:<16} {100.0 * px / total:6.2f}% of train pixels, weight {w:.3f}")


def cmd_smoke(args: argparse.Namespace) -> None:
    from hpcnas.smoke import smoke

    smoke(out=args.out, config_path=args.config, overrides=args.set)


def cmd_search(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import search

    search(
        config_path=args.config,
        overrides=args.set,
        out=args.out,
        resume=args.resume,
        device=args.device,
        plan=args.plan,
    )


def cmd_evolve(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import evolve

    run_dir = evolve(args.config, args.set, out=args.out, resume=args.resume)
    if run_dir is not None:
        print(f"evolve done: {RunDir(run_dir).history}")


def cmd_train(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import train

    train(
        args.config,
        args.set,
        genotype=args.genotype,
        baseline=args.baseline,
        seed=args.seed,
        out=args.out,
        resume=args.resume,
        device=args.device,
        evaluate_split=args.evaluate,
        plan=args.plan,
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import evaluate

    result, target = evaluate(args.checkpoint, args.data, args.split, args.out, args.device)
    curve = result["objects"]
    print(f"{args.split}: mIoU {result['miou']:.4f} over {result['images']} full images -> {RunDir(target).evaluation}")
    print("IoU threshold  " + " ".join(f"{t:5.1f}" for t in curve["thresholds"]))
    print("precision      " + " ".join(f"{v:5.2f}" for v in curve["precision"]))
    print("recall         " + " ".join(f"{v:5.2f}" for v in curve["recall"]))


def cmd_predict(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import predict
    from hpcnas.predict.run import PredictOptions

    options = PredictOptions(
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        blend=args.blend,
        probabilities=args.probabilities,
        vector=args.vector,
        resume=args.resume,
        part=args.part,
        cog=args.cog,
        min_area=args.min_area,
        simplify=args.simplify,
    )
    counts = predict(args.checkpoint, args.input, args.out, options, engine=args.engine, device=args.device)
    print(
        f"predict: {counts['predicted']} scene(s) -> {args.out}"
        + (f", {counts['skipped']} already there" if counts["skipped"] else "")
    )


def cmd_export(args: argparse.Namespace) -> Optional[int]:
    from hpcnas.pipeline import export

    result = export(args.checkpoint, args.format, args.out, args.tile)
    verdict = "parity ok" if result["ok"] else "PARITY FAILED, nothing written"
    print(
        f"export {result['format']}: max |logit difference| {result['max_abs_diff']:.2e} on a random batch "
        f"(tolerance {result['tolerance']:.0e}): {verdict}" + (f" -> {result['out']}" if result["ok"] else "")
    )
    return None if result["ok"] else EXIT_FAILURE


def _report_job_ending(job, local: bool) -> bool:
    """Wait for ``job`` and print how it ended: one line on stdout when it finished, else one on stderr naming
    SLURM's reason (a cancel, a time limit, a lost node) or the job's own error.  True when it finished."""
    from hpcnas.cluster.submit import final_job_state, how_it_ended

    result, error = None, None
    try:
        result = job.results()[0]  # rank 0's (every task returns one)
    except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's own failure
        error = exc
    if result is not None and result.get("finished", True):
        print(f"job {job.job_id} done: {result['run_dir']}")
        return True
    state = None if local else final_job_state(str(job.job_id))
    ending = how_it_ended(state)
    if result is not None:  # stopped by a cancel: its state is saved, and SLURM knows why
        print(f"hpcnas: job {job.job_id} {ending or 'stopped before the end'} (SLURM state {state}); continue "
              f"with --resume {result['run_dir']}", file=sys.stderr)  # fmt: skip
    elif ending and ending != "failed":  # the job's own last words are submitit's "no output" here
        print(f"hpcnas: job {job.job_id} {ending} (SLURM state {state}; log: {job.paths.stderr})", file=sys.stderr)
    else:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        print(f"hpcnas: job {job.job_id} failed: {detail} (log: {job.paths.stderr})", file=sys.stderr)
    return False


def cmd_submit(args: argparse.Namespace) -> Optional[int]:
    from hpcnas.cluster.submit import Request, sbatch_text, submit

    request = Request(
        command=args.command_name,
        config=args.config,
        overrides=args.set,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        array=args.array,
        signal_delay_s=args.signal_delay,
        genotype=args.genotype,
        baseline=args.baseline,
        out=args.out,
        logs=args.logs,
        checkpoint=args.checkpoint,
        input=args.input,
        predict_options={
            "vector": args.vector,
            "probabilities": args.probabilities,
            "cog": args.cog,
            "min_area": args.min_area,
            "simplify": args.simplify,
        },
    )
    if args.dry_run:
        print(sbatch_text(request))
        return None
    jobs = submit(request, local=args.local)
    for job, run_dir in jobs:
        print(
            f"submitted job {job.job_id} ({'local' if args.local else 'slurm'}): "
            f"hpcnas {request.command} -> {run_dir}; logs {job.paths.stdout}"
        )
    if args.wait or args.local:
        failed = [job for job, _ in jobs if not _report_job_ending(job, local=args.local)]
        return EXIT_FAILURE if failed else None
    return None


def cmd_pareto(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import pareto

    search, target = pareto(args.run, args.export)
    names = [o.name for o in search.objectives]
    front = search.front
    print(
        f"{search.run_dir}: {len(front)} of {len(search.evaluations)} evaluations on the front of "
        + ", ".join(map(str, search.objectives))
    )
    print("  id  " + "".join(f"{n:>14}" for n in names) + "  genotype")
    for e in front:
        values = "".join(f"{e.objectives[n]:>14.6g}" if n in e.objectives else f"{'-':>14}" for n in names)
        print(f"{e.id:>4}  {values}  {e.genotype.describe()}")
    if target is not None:
        print(f"exported {len(front)} genotype(s) -> {target}/eval-*/genotype.json (hpcnas train --genotype ...)")


def cmd_score(args: argparse.Namespace) -> None:
    from hpcnas.pipeline import score

    rows = score(args.run, args.genotypes, args.random, args.seed, args.tiles, args.data, args.device)
    if args.json:
        print(json.dumps({"search": args.run, "tiles": args.tiles, "candidates": rows}, indent=2))
        return
    print(
        f"{args.run}: {len(rows)} candidate(s) by perturbation score, highest first (how much the supernet's "
        f"validation loss on {args.tiles} tiles rises when each of a candidate's ops is removed, summed)"
    )
    print("rank  perturbation  candidate")
    for rank, row in enumerate(rows, 1):
        print(f"{rank:>4}  {row['perturbation']:>+12.5f}  {row['candidate']}")
    print(
        "retrain the first few (hpcnas train --genotype FILE, or --genotype random --seed S with this search's "
        "space): the score orders retrained networks better than chance, not perfectly"
    )


def cmd_status(args: argparse.Namespace) -> None:
    from hpcnas.report.status import status_screens

    def draw() -> None:
        text, statuses = status_screens(args.runs)
        if args.json:
            print(json.dumps({"runs": statuses}, indent=2), flush=True)
        else:
            if args.watch:
                print("\033[2J\033[H" + time.strftime("%H:%M:%S") + f"  (every {args.watch:g} s; Ctrl-C ends)\n")
            print(text, flush=True)

    if not args.watch:
        draw()
        return
    try:  # Ctrl-C is how a watch ends, whether it lands while sleeping or while reading the runs
        while True:
            draw()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return


def cmd_report(args: argparse.Namespace) -> None:
    from hpcnas.report.build import report

    out = report(args.runs, args.out)
    print(f"report: {out / SUMMARY}")


# --------------------------------------------------------------------------
# parser


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--config",
        required=required,
        help="YAML configuration file (see configs/)"
        + ("" if required else "; with --resume, the run's own config.yaml"),
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set search.epochs=3 (repeatable)",
    )


def _add_resume_existing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume-existing",
        action="store_true",
        help="with --out DIR: continue the run if DIR already holds one, else start it (what a requeued job wants)",
    )


def _resolve_resume_existing(args: argparse.Namespace) -> None:
    """``--out DIR --resume-existing`` means ``--resume DIR`` once DIR holds a run."""
    if getattr(args, "resume_existing", False):
        from hpcnas.pipeline import start_or_resume

        args.out, args.resume = start_or_resume(None if args.resume else args.out)


def _add_gis_args(p: argparse.ArgumentParser, prefix: str) -> None:
    """The output options GIS users expect of predict: COG, and polygons without specks or staircases."""
    p.add_argument("--cog", action="store_true", help=f"{prefix}write Cloud-Optimized GeoTIFFs (with overviews)")
    p.add_argument(
        "--min-area",
        default="4px",
        metavar="AREA",
        help=f"{prefix}drop polygons smaller than AREA: map units (e.g. 2.5 for m^2 in a metric CRS) or "
        "pixels with px (default 4px: single-pixel specks go)",
    )
    p.add_argument(
        "--simplify",
        default="1px",
        metavar="TOLERANCE",
        help=f"{prefix}simplify polygon outlines within TOLERANCE: map units, or pixels with px; 0 keeps every "
        "pixel corner (default 1px)",
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a wrong command line is one ``hpcnas: error:`` line (exit 2), like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"hpcnas: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``hpcnas`` argument parser with all its subcommands."""
    parser = OneLineParser(
        prog="hpcnas", description="Neural architecture search for semantic segmentation on SLURM GPU clusters."
    )
    parser.add_argument("--version", action="version", version=f"hpcnas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("smoke", help="local end-to-end run on the embedded synthetic data")
    p.add_argument("--out", help="run directory (default: a new folder under runs/)")
    p.add_argument("--config", default=None, help="configuration (default: configs/smoke.yaml settings)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeatable)")
    p.set_defaults(func=cmd_smoke)

    p = sub.add_parser("search", help="continuous architecture search (DARTS / PC-DARTS / GAEA)")
    _add_config_args(p, required=False)
    p.add_argument("--out", help="run directory (default: a new folder under runs/)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    _add_resume_existing(p)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's)")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the network's parameters, the estimated peak memory per step and the seconds per step "
        "(3 timed steps), then exit without writing anything",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "evolve", help="discrete search (regularized evolution, random) on MPI: mpirun -np N hpcnas-evolve ..."
    )
    _add_config_args(p, required=False)
    p.add_argument("--out", help="run directory (default: a new folder under runs/)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the search in DIR: re-queue what was in flight, retrain nothing finished",
    )
    _add_resume_existing(p)
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("train", help="retrain a genotype, a random cell or the ResNet-UNet baseline")
    _add_config_args(p, required=False)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--genotype", help="genotype JSON file, or 'random' for a random cell of the configured topology"
    )
    which.add_argument("--baseline", help="hand-designed baseline: resnet_unet")
    p.add_argument("--seed", type=int, default=0, help="seed of the random genotype (with --genotype random)")
    p.add_argument("--out", help="run directory (default: a new folder under runs/)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    _add_resume_existing(p)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's)")
    p.add_argument(
        "--evaluate",
        metavar="SPLIT",
        choices=["val", "test"],
        help="then evaluate the best checkpoint on SPLIT (full images) into evaluation.json",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the network's parameters, the estimated peak memory per step and the seconds per step "
        "(3 timed steps), then exit without writing anything",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="full-image IoU / mIoU and object precision-recall of a trained network")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (RUN/checkpoints/best.pt)")
    p.add_argument("--data", help="HDF5 data set (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", help="where evaluation.json goes (default: the checkpoint's run directory)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="run a trained network over large scenes: GeoTIFF class maps, polygons")
    p.add_argument("--checkpoint", required=True, help="RUN/checkpoints/best.pt, or a file hpcnas export wrote")
    p.add_argument("--input", required=True, help="a scene (GeoTIFF, PNG, JPEG, ...) or a folder of scenes")
    p.add_argument("--out", required=True, help="output folder (one set of files per scene)")
    p.add_argument("--tile", type=int, help="window size in px (default: the training tile)")
    p.add_argument("--overlap", type=int, help="window overlap in px (default: the training overlap)")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument(
        "--blend",
        default="smooth",
        choices=["mean", "smooth"],
        help="overlapping logits: weights fading toward window borders (default), or the plain mean",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--engine", default="auto", choices=["auto", "torch", "torchscript", "onnxruntime"], help="default: by file"
    )
    p.add_argument("--probabilities", action="store_true", help="also write per-class probabilities (float16)")
    p.add_argument("--vector", action="store_true", help="also write objects as GeoJSON polygons")
    _add_gis_args(p, "")
    p.add_argument("--resume", action="store_true", help="skip the scenes whose class map is already written")
    p.add_argument(
        "--part", metavar="K/N", help="only every N-th scene from the K-th (K from 0): one task of a job array"
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="a trained network as TorchScript or ONNX, checked against PyTorch")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (RUN/checkpoints/best.pt)")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx"])
    p.add_argument("--out", required=True, help="the file to write (must not exist)")
    p.add_argument("--tile", type=int, help="input size in px (default: the training tile)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "submit",
        help="submit search / evolve / train as a SLURM job (submitit), requeued and resumed at the time limit",
    )
    p.add_argument("--config", help="YAML configuration file (checked before submitting; not for predict)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeatable)")
    p.add_argument(
        "--command",
        dest="command_name",
        default="search",
        choices=["search", "evolve", "train", "predict"],
        help="what the job runs (default search)",
    )
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=4,
        help="GPUs per node = ranks per node for search/evolve (default 4; train uses 1)",
    )
    p.add_argument("--cpus-per-task", type=int, default=10, help="CPUs per rank (default 10)")
    p.add_argument("--time", default="01:00:00", help="time limit, HH:MM:SS or D-HH:MM:SS (default 01:00:00)")
    for name in ("partition", "account", "qos", "constraint"):
        p.add_argument(f"--{name}", help=f"SLURM {name} (default: sbatch's, e.g. SBATCH_{name.upper()})")
    p.add_argument(
        "--signal-delay",
        type=int,
        default=120,
        metavar="SECONDS",
        help="SIGUSR2 this long before the time limit: checkpoint, requeue (default 120)",
    )
    p.add_argument(
        "--array",
        type=int,
        metavar="N",
        help="a job array: train N random cells (random baselines), or predict with N tasks sharing the scenes",
    )
    p.add_argument("--checkpoint", help="predict: the trained network (best.pt) or an exported file")
    p.add_argument("--input", help="predict: a folder of scenes")
    p.add_argument("--vector", action="store_true", help="predict: also write GeoJSON polygons")
    p.add_argument("--probabilities", action="store_true", help="predict: also write per-class probabilities")
    _add_gis_args(p, "predict: ")
    p.add_argument("--genotype", help="train: the genotype JSON to retrain")
    p.add_argument("--baseline", help="train: a hand-designed baseline (resnet_unet)")
    p.add_argument("--out", help="run directory; %%j becomes the job id (default runs/COMMAND-%%j)")
    p.add_argument(
        "--logs", default="runs/submitit", help="submitit's folder for job scripts and logs (default runs/submitit)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the generated sbatch script, submit nothing")
    p.add_argument(
        "--local", action="store_true", help="run here without SLURM (one process), for debugging; waits for the end"
    )
    p.add_argument("--wait", action="store_true", help="wait for the job(s) to finish and report how they ended")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("report", help="plots, cell drawings and a summary of one or more runs")
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories; the first one gets report/, the others are overlaid",
    )
    p.add_argument("--out", help="report folder (default: FIRST_RUN/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("status", help="where runs stand: progress, ETA, best so far, heartbeat, SLURM job state")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (search, train or evolve)")
    p.add_argument("--watch", type=float, metavar="N", help="redraw every N seconds until Ctrl-C")
    p.add_argument("--json", action="store_true", help="one JSON object ({'runs': [...]}) instead of the screens")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "score", help="rank candidate architectures by their perturbation score in a finished search's supernet"
    )
    p.add_argument("run", metavar="SEARCH_DIR", help="a continuous search's run directory (hpcnas search)")
    p.add_argument(
        "genotypes", nargs="*", metavar="GENOTYPE", help="genotype files to rank beside the search's own genotype"
    )
    p.add_argument("--random", type=int, default=0, metavar="N", help="also N random cells of the search's space")
    p.add_argument(
        "--seed", type=int, default=0, help="the first random cell's seed (then seed+1, ...): as train --seed draws"
    )
    p.add_argument("--tiles", type=int, default=64, help="validation tiles each removal is measured on (64)")
    p.add_argument("--data", help="HDF5 data set (default: the search's own)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "pareto", help="the Pareto front of a discrete search; --export writes each member's genotype.json"
    )
    p.add_argument("run", metavar="RUN_DIR", help="a discrete search's run directory (hpcnas-evolve)")
    p.add_argument(
        "--export", metavar="DIR", help="a new folder: DIR/eval-ID/genotype.json per front member, and DIR/front.json"
    )
    p.set_defaults(func=cmd_pareto)

    checkpoint = sub.add_parser("checkpoint", help="convert checkpoints").add_subparsers(
        dest="checkpoint_command", metavar="ACTION", required=True
    )
    p = checkpoint.add_parser(
        "upgrade",
        help="rewrite checkpoints of earlier hpcnas versions in the format that loads without running code "
        "(this reads each file with Python's full unpickler: only for files you trust)",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_checkpoint_upgrade)

    data = sub.add_parser("data", help="build or inspect HDF5 data sets").add_subparsers(
        dest="data_command", metavar="ACTION", required=True
    )
    p = data.add_parser("synth", help="write the synthetic rotorcraft data set")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--n", type=int, default=48, help="number of patches (default 48)")
    p.add_argument("--size", type=int, default=64, help="patch size in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.set_defaults(func=cmd_data_synth)

    p = data.add_parser("tile", help="tile large images and masks into an HDF5 data set")
    p.add_argument("--images", required=True, help="folder of images (PNG/JPEG, GeoTIFF or another GDAL raster)")
    p.add_argument("--masks", required=True, help="folder of masks, same relative names")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--overlap", type=int, default=180)
    p.add_argument("--palette", help="YAML palette mapping mask colours to classes (see configs/palettes/)")
    p.add_argument("--classes", help="comma-separated class names for id masks (default background,object)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="tile only the first N images")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resize images (bilinear) and masks (nearest) by this factor first (default 1)",
    )
    p.add_argument(
        "--stratify",
        action="store_true",
        help="spread images with and without foreground evenly over train/val/test (small-object data)",
    )
    p.add_argument("--bands", help="image bands to use, in order, counted from 1 (e.g. 3,2,1; default all)")
    p.set_defaults(func=cmd_data_tile)

    p = data.add_parser("info", help="check a data set and print what it holds")
    p.add_argument("file")
    p.set_defaults(func=cmd_data_info)
    return parser


# --------------------------------------------------------------------------
# entry points


def run(func: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    """Call a command function; map bad input to exit 2 and failures to exit 1 with a log."""
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    from hpcnas.distributed import launched_rank

    try:
        _resolve_resume_existing(args)
        return int(func(args) or 0)
    except Interrupted as exc:
        if launched_rank() == 0:
            say(str(exc))  # in the run's log.txt too: a job's stops and resumes are read there side by side
        return EXIT_RESUMABLE
    except UserError as exc:
        if launched_rank() == 0:  # every rank sees the same bad input: one line, from rank 0
            print(f"hpcnas: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SearchFailed as exc:
        print(f"hpcnas: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("hpcnas: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: log, one line, exit 1
        out = getattr(args, "out", None) or getattr(args, "resume", None)
        full = _full_disk(exc, out)
        if full:  # not the user's input (exit 1), but no bug either: say what happened, no traceback
            print(f"hpcnas: error: no space left on device writing {full}", file=sys.stderr)
            return EXIT_FAILURE
        logfile = _write_crash_log(out, traceback.format_exc())
        where = f"traceback in {logfile}" if logfile else "no room anywhere for the traceback"
        print(f"hpcnas: internal error: {type(exc).__name__}: {exc} ({where})", file=sys.stderr)
        return EXIT_FAILURE


def _full_disk(exc: BaseException, out: Optional[str]) -> Optional[str]:
    """What was being written when the device filled up, or ``None`` when ``exc`` is not a full disk.

    The ENOSPC may sit anywhere in the exception's chain (torch reports a failed
    write as a RuntimeError of its own); with none there, a failure while the
    run directory's file system has no byte left counts too.
    """
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return seen.filename or out or "a file"
        seen = seen.__cause__ or seen.__context__
    if out and Path(out).exists():
        fs = os.statvfs(out)
        if fs.f_bavail == 0:
            return out
    return None


def _write_crash_log(out: Optional[str], text: str) -> Optional[Path]:
    """Append the traceback to the run directory's error.log, or to a per-process file in the temp
    folder; never raises (a crash handler that fails would hide the first failure)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidates = [RunDir(out).error_log] if out and Path(out).is_dir() else []
    candidates.append(Path(tempfile.gettempdir()) / f"hpcnas-error-{stamp}-{os.getpid()}.log")
    for path in candidates:
        try:
            with open(path, "a") as fh:
                fh.write(f"--- {stamp} pid {os.getpid()}\n{text}")
            return path
        except OSError:
            continue
    return None


RESUMABLE = {"search", "train", "evolve"}  # the commands that save their state on a stop signal (exit 75)


def main(argv: Optional[List[str]] = None) -> int:
    """``hpcnas`` console script."""
    STOP.arm()  # first: a SLURM warning while the command is still starting is kept, not fatal
    from hpcnas.distributed import mpi_launch_defaults

    mpi_launch_defaults()  # before any MPI_Init, and inherited by anything this process launches
    args = build_parser().parse_args(argv)
    if args.command not in RESUMABLE:
        STOP.disarm()  # the others stop on SIGTERM the ordinary way
    code = run(args.func, args)
    # the command is over: a SLURM warning arriving now (the process still has to shut torch and
    # MPI down) has nothing left to save, and must not turn a finished run into death by SIGUSR2
    ignore_stop_signals(until_exit=True)
    return code


def evolve_main(argv: Optional[List[str]] = None) -> int:
    """``hpcnas-evolve`` console script (the MPI discrete search)."""
    return main(["evolve"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
