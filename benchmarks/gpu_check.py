"""The figures only a GPU can give, in one command with a time cap per item.

Each item runs in its own child process under its own cap and writes its rows as it measures them, so a run cut
short (or an item that crashes, such as a ``torch.compile`` the compiler refuses) still says what it measured.
A line is printed per item as it finishes; in the end ``gpu-check.json`` and ``gpu-check.md`` are written to
``--out``. Items, in the order they run:

* ``step``: the real search step (``SupernetSearch.train_step``: an architecture step, then a weight step) in
  images per second (two batches per step, as ``data_parallel.py`` counts), per tile and batch, for fp32, bf16
  autocast and channels_last, alternating in rounds; the first shape repeats the earlier H100 figure's (128 px,
  batch 8, C=8, depth 3: 18 img/s), the others are the paper's DARTS-UNet (C=16, depth 4, K=4) at 256 px.
* ``memory``: the dispatcher's memory estimate against ``torch.cuda.max_memory_allocated`` over one SGD step of
  random architectures of each topology (batch 8, 256 px), with the estimate's terms, so it can be calibrated.
* ``latency``: the latency objective (``measure_latency``) of 10 architectures, twice, and the ``search.cost:
  latency`` table's prediction for each; Kendall tau between the runs and between prediction and measurement.
* ``predict``: ``hpcnas predict`` on a generated 10,000 x 10,000 GeoTIFF with a small DARTS-UNet, 512 px windows;
  megapixels per second, GPU memory, host peak RSS, and the time of reading the windows alone and of
  vectorizing, to say which part bounds it.
* ``tests``: the ``gpu``-marked tests (pytest -m gpu).
* ``compile`` / ``graphs``: the step of the 256 px shape with the supernet under ``torch.compile`` (default
  mode), then under ``mode="reduce-overhead"`` (CUDA graphs), against eager in the same process.

    python benchmarks/gpu_check.py --out DIR [--device cuda|cpu] [--items step,memory,...] [--small]

``--small`` shrinks every item (tiles, counts, scene) so the whole script runs on a CPU in a minute: the test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _peak import peak_rss_mb  # noqa: E402 - benchmarks/_peak.py, beside this script

ITEMS = ("step", "memory", "latency", "predict", "tests", "compile", "graphs")
# seconds; 480 in all. On an H200 the three step shapes need about 200 s, and compiling the supernet took more than
# 312 s (benchmarks/results/gpu-h200.md): compile and graphs run last, so a cut there loses nothing else
CAPS = {"step": 210, "memory": 45, "latency": 30, "predict": 75, "tests": 40, "compile": 45, "graphs": 35}


def kendall_tau(a: List[float], b: List[float]) -> float:
    """Kendall's tau-b of two paired lists."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


# -- the items (each runs in a child process and calls ``row`` per measurement) ---------------------------------


def sync(device) -> None:
    """Wait for the device (nothing to wait for on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_shapes(args) -> List[Dict[str, Any]]:
    """The measured search shapes: the earlier H100 figure's, then the paper's DARTS-UNet at the asked batches."""
    if args.small:
        return [{"name": "small", "config": "smoke.yaml", "tile": 32, "batch": 2, "sets": []}]
    earlier = ["space.channels=8", "space.depth=3", "space.nodes=4", "search.partial_channels=4"]
    shapes = [{"name": "h100-earlier", "config": "smoke.yaml", "tile": 128, "batch": 8, "sets": earlier}]
    return shapes + [
        {"name": f"paper-{args.tile}-b{b}", "config": "darts_unet.yaml", "tile": args.tile, "batch": b, "sets": []}
        for b in (8, 16)
    ]


def search_runner(shape: Dict[str, Any], device, work: Path):
    """A real ``SupernetSearch`` of ``shape`` on generated data, and a few of its (weight, architecture) batches."""
    import torch

    from hpcnas.config import load_config
    from hpcnas.data.hdf5 import read_info
    from hpcnas.data.synth import synthesize
    from hpcnas.search.continuous import SupernetSearch

    data = work / f"synth-{shape['tile']}-{shape['batch']}.h5"
    if not data.exists():
        synthesize(data, n=6 * shape["batch"], size=shape["tile"], seed=0, val_fraction=0.1, test_fraction=0.0)
    sets = [f"data.path={data}", f"search.batch_size={shape['batch']}", "search.arch_start_epoch=0",
            "monitor.tensorboard=false", "data.num_workers=0", *shape["sets"]]  # fmt: skip
    cfg = load_config(str(ROOT / "configs" / shape["config"]), sets)
    runner = SupernetSearch(cfg, work / f"run-{shape['name']}", str(data), read_info(data), torch.device(device))
    batches = list(islice(runner.epoch_batches(0, 0), 4))
    return runner, batches


def set_format(runner, name: str) -> None:
    """Switch a runner to fp32, bf16 or channels_last in place."""
    import torch

    from hpcnas.runtime import ComputeFormat

    channels_last = name == "channels_last"
    runner.format = ComputeFormat(runner.device, "bf16" if name == "bf16" else "fp32", channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    runner.model = runner.model.to(memory_format=layout)


def time_steps(runner, batches, steps: int) -> float:
    """Images per second over ``steps`` search steps (two batches each), the device drained before and after."""
    sync(runner.device)
    t0 = time.perf_counter()
    for i in range(steps):
        runner.train_step(1, batches[i % len(batches)])
    sync(runner.device)
    images = sum(len(batches[i % len(batches)][0][0]) * 2 for i in range(steps))
    return images / (time.perf_counter() - t0)


def item_step(args, work: Path, row: Callable) -> None:
    formats = ["fp32", "bf16"] + (["channels_last"] if args.device == "cuda" else [])
    steps, rounds = (2, 2) if args.small else (6, 2)
    for shape in step_shapes(args):
        runner, batches = search_runner(shape, args.device, work)
        speeds: Dict[str, List[float]] = {f: [] for f in formats}
        for fmt in formats:  # warm-up: cuDNN's algorithm search, the allocator, autocast's caches
            set_format(runner, fmt)
            time_steps(runner, batches, 2)
        for _ in range(rounds):
            for fmt in formats:
                set_format(runner, fmt)
                speeds[fmt].append(time_steps(runner, batches, steps))
        base = statistics.median(speeds["fp32"])
        for fmt, runs in speeds.items():
            row({"shape": shape["name"], "tile": shape["tile"], "batch": shape["batch"], "format": fmt,
                 "images_per_s": statistics.median(runs), "runs": runs,
                 "ratio_to_fp32": statistics.median(runs) / base})  # fmt: skip
        del runner


def compiled_step(args, work: Path, row: Callable, mode: str) -> None:
    """Eager, then the supernet under ``torch.compile(mode=...)``, in one process; compile time reported apart."""
    import torch

    shape = step_shapes(args)[-1]
    runner, batches = search_runner(shape, args.device, work)
    steps = 2 if args.small else 8
    time_steps(runner, batches, 2)
    eager = [time_steps(runner, batches, steps) for _ in range(2)]
    row({"shape": shape["name"], "variant": "eager", "images_per_s": statistics.median(eager), "runs": eager})
    if args.device == "cpu":  # the CPU test checks the path, not the speed: dynamo traces, nothing compiles
        runner.model = torch.compile(runner.model, backend="eager")
    else:
        runner.model = torch.compile(runner.model, mode=mode)
    t0 = time.perf_counter()
    time_steps(runner, batches, 3)  # compiles (and captures graphs) on the first steps
    compile_s = time.perf_counter() - t0
    row({"shape": shape["name"], "variant": f"compile:{mode}", "compile_s": compile_s, "note": "compiling done"})
    runs = [time_steps(runner, batches, steps) for _ in range(2)]
    row({"shape": shape["name"], "variant": f"compile:{mode}", "images_per_s": statistics.median(runs), "runs": runs,
         "compile_s": compile_s, "ratio_to_eager": statistics.median(runs) / statistics.median(eager)})  # fmt: skip


def item_compile(args, work: Path, row: Callable) -> None:
    compiled_step(args, work, row, "default")


def item_graphs(args, work: Path, row: Callable) -> None:
    if args.device != "cuda":
        row({"skipped": "CUDA graphs need a GPU"})
        return
    compiled_step(args, work, row, "reduce-overhead")


def item_memory(args, work: Path, row: Callable) -> None:
    import torch
    from memory_estimate import gpu_peak

    from hpcnas.config import load_config
    from hpcnas.space.genotype import TOPOLOGIES
    from hpcnas.space.networks import build_discrete_network
    from hpcnas.space.searchspace import SearchSpace
    from hpcnas.train.memory import estimate_training_memory

    archs, batch, tile = (2, 2, 32) if args.small else (args.archs, 8, args.tile)
    torch.set_num_threads(1)  # the estimate runs on rank 0's one thread
    for topology in TOPOLOGIES:
        cfg = load_config(None, [f"space.topology={topology}", "space.depth=3", "space.channels=16"])
        space = SearchSpace.from_config(cfg)
        rng = random.Random(0)
        for i in range(archs):
            genotype = space.sample(rng)
            model = build_discrete_network(genotype, 3, 2, channels=16, depth=3)
            estimate = estimate_training_memory(model, 3, tile, space.stride())
            out = {"topology": topology, "arch": i, "batch": batch, "tile": tile,
                   "estimate_mb": estimate.total(batch) / 2**20, "parameters_mb": estimate.parameters / 2**20,
                   "saved_mb": estimate.saved(batch) / 2**20,
                   "working_mb": batch * estimate.working_per_sample / 2**20}  # fmt: skip
            if args.device == "cuda":
                peak = gpu_peak(model, batch, tile, 3, 2)
                out.update(measured_mb=peak / 2**20, error=estimate.total(batch) / peak - 1)
            row(out)


def predicted_latency(genotype, tables: Dict[str, Any], space) -> float:
    """The ``search.cost: latency`` table's sum over the ops ``genotype`` keeps (the table sums a role's cells)."""
    total = 0.0
    ops = list(space.ops)
    for role, nodes in genotype.cells:
        offset = 0
        for n, node in enumerate(nodes):
            sources = space.sources(n)
            for op, inp in node:
                total += float(tables[role][offset + sources.index(inp), ops.index(op)])
            offset += len(sources)
    return total


def item_latency(args, work: Path, row: Callable) -> None:
    import torch

    from hpcnas.config import load_config
    from hpcnas.execution.worker import measure_latency
    from hpcnas.search.continuous import build_supernet
    from hpcnas.search.cost import ExpectedCost
    from hpcnas.space.networks import build_discrete_network
    from hpcnas.space.searchspace import SearchSpace

    device = torch.device(args.device)
    tile, count, runs = (32, 3, 3) if args.small else (args.tile, 10, 20)
    cfg = load_config(str(ROOT / "configs" / "darts_unet.yaml"), ["space.depth=3"])
    space = SearchSpace.from_config(cfg)

    class Info:  # what build_supernet reads of a data set
        tile_size, channels, num_classes, path = tile, 3, 2, "<generated>"

    supernet = build_supernet(cfg, Info, device).to(device)
    t0 = time.perf_counter()
    tables = ExpectedCost(supernet, "latency", torch.zeros(1, 3, tile, tile, device=device)).tables
    table_s = time.perf_counter() - t0
    del supernet
    rng = random.Random(1)
    genotypes = [space.sample(rng) for _ in range(count)]
    models = [build_discrete_network(g, 3, 2, channels=16, depth=3).to(device) for g in genotypes]
    first = [measure_latency(m, 3, tile, device, runs) for m in models]
    second = [measure_latency(m, 3, tile, device, runs) for m in models]  # a second pass: how repeatable
    predicted = [predicted_latency(g, tables, space) for g in genotypes]
    for i in range(count):
        row({"arch": i, "latency_ms_1": first[i], "latency_ms_2": second[i], "table_ms": predicted[i]})
    measured = [(a + b) / 2 for a, b in zip(first, second)]
    row({"summary": True, "tile": tile, "table_s": table_s, "tau_repeat": kendall_tau(first, second),
         "tau_table": kendall_tau(predicted, measured)})  # fmt: skip


def item_predict(args, work: Path, row: Callable) -> None:
    from predict import train_small_network, write_scene

    size, tile = (256, 64) if args.small else (args.scene, 512)
    checkpoint = train_small_network(work)
    scene = work / "scene.tif"
    t0 = time.perf_counter()
    write_scene(scene, size, compress=None)
    row({"phase": "write scene", "size": size, "seconds": time.perf_counter() - t0})
    megapixels = size * size / 1e6
    child = [sys.executable, str(Path(__file__).resolve()), "--predict-child", "--device", args.device]
    phases = (("read windows only", ["--read-only"]), ("network only", ["--network-only"]), ("predict", []),
              ("predict --vector", ["--vector"]))  # fmt: skip
    for phase, extra in phases:
        out = work / f"out-{len(extra)}-{phase.replace(' ', '')}"
        cmd = child + [str(checkpoint), str(scene), str(out), str(tile)] + extra
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            row({"phase": phase, "error": f"exit {proc.returncode}"})
            continue
        reported = json.loads(proc.stdout.strip().splitlines()[-1])  # its own seconds: without its start-up
        row({"phase": phase, "size": size, "tile": tile, "process_s": seconds, "megapixels": megapixels,
             "megapixels_per_s": megapixels / reported["seconds"], **reported})  # fmt: skip


def predict_child(argv: List[str]) -> int:
    """In its own process: one predict (or only the reading of its windows); prints seconds and memory as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("scene")
    p.add_argument("out")
    p.add_argument("tile", type=int)
    p.add_argument("--device", default="cuda")
    p.add_argument("--vector", action="store_true")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--network-only", action="store_true")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    t0 = time.perf_counter()
    if args.network_only:  # the windows of the scene as random batches of 8: the engine alone, no reading, no writing
        from hpcnas.predict.engines import TorchEngine

        engine = TorchEngine(args.checkpoint, args.device)
        import rasterio

        with rasterio.open(args.scene) as src:
            windows = -(-src.height // args.tile) * -(-src.width // args.tile)
        batch = np.random.default_rng(0).random((8, engine.card.in_channels, args.tile, args.tile), np.float32)
        t0 = time.perf_counter()
        for _ in range(-(-windows // 8)):
            engine(batch)
    elif args.read_only:
        import rasterio
        from rasterio.windows import Window

        from hpcnas.predict.sliding import window_starts

        with rasterio.open(args.scene) as src:
            for y in window_starts(src.height, args.tile, 0):
                for x in window_starts(src.width, args.tile, 0):
                    src.read(window=Window(x, y, args.tile, args.tile))
    else:
        from hpcnas.predict.run import PredictOptions, predict

        options = PredictOptions(tile=args.tile, overlap=0, batch=8, vector=args.vector)
        predict(args.checkpoint, args.scene, args.out, options, device=args.device)
    seconds = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    rss = peak_rss_mb()  # not ru_maxrss, which holds the parent's peak (benchmarks/_peak.py)
    print(json.dumps({"seconds": seconds, "gpu_peak_mb": gpu, "peak_rss_mb": rss}))
    return 0


def item_tests(args, work: Path, row: Callable) -> None:
    # the files that hold gpu-marked tests: collecting every file would import what a GPU image may lack (Horovod)
    files = sorted({str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                    if "mark.gpu" in p.read_text()})  # fmt: skip
    # one process (not the suite's 3): the tests share the one GPU, and one of them fills its memory on purpose
    one_process = ["-p", "no:xdist", "-o", "addopts="]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *one_process, *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    row({"exit": proc.returncode, "summary": lines[-1] if lines else "", "output": proc.stdout[-4000:]})


RUNNERS = {"step": item_step, "memory": item_memory, "latency": item_latency, "predict": item_predict,
           "tests": item_tests, "compile": item_compile, "graphs": item_graphs}  # fmt: skip


def run_item(name: str, args) -> int:
    """The child's side: run one item, appending each row to ``--rows`` as soon as it is measured."""
    rows = Path(args.rows)

    def row(values: Dict[str, Any]) -> None:
        with open(rows, "a") as fh:
            fh.write(json.dumps(values) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        RUNNERS[name](args, Path(tmp), row)
    return 0


# -- the parent: caps, lines, the JSON and the table -------------------------------------------------------------


def summarize(name: str, rows: List[Dict[str, Any]]) -> str:
    """One line of what an item measured."""
    if not rows:
        return "nothing measured"
    if name == "step":
        return "; ".join(f"{r['shape']} {r['format']} {r['images_per_s']:.1f} img/s ({r['ratio_to_fp32']:.2f}x)"
                         for r in rows)  # fmt: skip
    if name in ("compile", "graphs"):
        return "; ".join(
            f"{r['variant']} "
            + (f"{r['images_per_s']:.1f} img/s" if "images_per_s" in r else "")
            + (f" ({r['ratio_to_eager']:.2f}x eager, compile {r['compile_s']:.0f} s)" if "ratio_to_eager" in r else "")
            for r in rows
            if "images_per_s" in r
        ) or rows[-1].get("skipped", "")
    if name == "memory":
        errors = [abs(r["error"]) for r in rows if "error" in r]
        if not errors:
            return f"{len(rows)} estimates (no GPU: nothing to compare)"
        return (f"{len(errors)} architectures: median |error| {100 * statistics.median(errors):.1f} %, "
                f"max {100 * max(errors):.1f} %")  # fmt: skip
    if name == "latency":
        s = [r for r in rows if r.get("summary")]
        return f"tau between runs {s[0]['tau_repeat']:.2f}, table vs measured {s[0]['tau_table']:.2f}" if s else "cut"
    if name == "predict":
        return "; ".join(
            f"{r['phase']}: " + (f"{r['megapixels_per_s']:.1f} Mpx/s" if "megapixels_per_s" in r else
                                 r.get("error") or f"{r.get('seconds', 0.0):.1f} s")
            for r in rows
        )  # fmt: skip
    if name == "tests":
        return f"exit {rows[-1]['exit']}: {rows[-1]['summary']}"
    return f"{len(rows)} rows"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu-check.json and gpu-check.md")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--items", default=",".join(ITEMS), help=f"comma-separated, of {', '.join(ITEMS)}")
    p.add_argument("--small", action="store_true", help="tiny sizes: the CPU test of this script")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--archs", type=int, default=30, help="memory: architectures per topology")
    p.add_argument("--scene", type=int, default=10000, help="predict: the scene's side in pixels")
    p.add_argument("--cap-scale", type=float, default=1.0, help="multiply every item's time cap")
    p.add_argument("--item", help=argparse.SUPPRESS)  # the child's side
    p.add_argument("--rows", help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--predict-child"]:
        return predict_child(argv[1:])
    args = p.parse_args(argv)
    if args.item:
        return run_item(args.item, args)
    names = [n.strip() for n in args.items.split(",") if n.strip()]
    unknown = [n for n in names if n not in ITEMS]
    if unknown:
        p.error(f"unknown item(s) {', '.join(unknown)} (known: {', '.join(ITEMS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Any] = {"command": "python " + " ".join(sys.argv), "device": device_name(args.device),
                               "items": {}}  # fmt: skip
    started = time.perf_counter()
    for name in names:
        rows_path = out / f"rows-{name}.jsonl"
        rows_path.unlink(missing_ok=True)
        cap = CAPS[name] * args.cap_scale
        cmd = [sys.executable, str(Path(__file__).resolve()), "--item", name, "--rows", str(rows_path),
               "--device", args.device, "--tile", str(args.tile), "--archs", str(args.archs),
               "--scene", str(args.scene), "--out", str(out)] + (["--small"] if args.small else [])  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cap)
            status = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            tail = proc.stderr[-2000:] if proc.returncode else ""
        except subprocess.TimeoutExpired as exc:
            status, tail = f"cut at its {cap:.0f} s cap", (exc.stderr or b"")[-2000:]
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
        rows_path.unlink(missing_ok=True)
        seconds = time.perf_counter() - t0
        results["items"][name] = {"status": status, "seconds": round(seconds, 1), "rows": rows, "stderr": tail}
        print(
            f"[{time.perf_counter() - started:5.0f} s] {name}: {status} in {seconds:.0f} s: {summarize(name, rows)}",
            flush=True,
        )
        if tail:
            print("    " + tail.strip().splitlines()[-1][:300], flush=True)
    (out / "gpu-check.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu-check.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def device_name(device: str) -> str:
    """The GPU's name, or ``cpu``."""
    if device != "cuda":
        return "cpu"
    import torch

    return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"


def markdown(results: Dict[str, Any]) -> str:
    """The results as a table: one row per item."""
    lines = [f"# GPU check: {results['device']}", "", f"`{results['command']}`", "",
             "| item | status | seconds | measured |", "| --- | --- | --- | --- |"]  # fmt: skip
    for name, item in results["items"].items():
        lines.append(f"| {name} | {item['status']} | {item['seconds']} | {summarize(name, item['rows'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
