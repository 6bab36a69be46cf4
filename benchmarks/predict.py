"""Prediction on large scenes: throughput (megapixels per second) and peak memory against the scene's size.

Every figure comes from the real ``hpcnas predict`` command run as a child
process on generated 3-band 8-bit GeoTIFFs (tiled, georeferenced): its wall
time gives the throughput, its own ``VmHWM`` its peak
memory.  The network is a small genotype trained for one epoch on synthetic
data here, unless ``--checkpoint`` names another.

    python benchmarks/predict.py [--sizes 2048,5000,20000] [--tile 256] [--overlap 64] [--device cpu]
                                 [--json benchmarks/results/predict-cpu.json]

``--naive`` also runs, on each scene and in the same run, the script a user
would write (``benchmarks/_naive_predict.py``: rasterio, non-overlapping
windows, the same network, the arg-max written as a GeoTIFF) and hpcnas with
``--overlap 0``, and reports each speed against the naive script's, with the
windows each ran: the goals are ``--overlap 0`` at >= 1.0x the naive speed,
and the default overlap at >= 0.9 x (naive windows / hpcnas windows).

``--seams DATA.h5 --checkpoint A,B --windows 64:16,256:64`` instead compares
the blends (mean, smooth) on the test images of a data set, for every
network and window: mIoU over the whole images and over the pixels within
8 px of a window border, where seams show.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _emit import emit  # noqa: E402 - benchmarks/_emit.py, beside this script
from _peak import PEAK_FILE, hpcnas_reporting_peak  # noqa: E402

from hpcnas.predict.sliding import window_starts  # noqa: E402


def write_scene(path: Path, size: int, block: int = 1024, compress: Optional[str] = "deflate") -> None:
    """A size x size 3-band uint8 GeoTIFF, written block row by block row (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs="EPSG:32640",
                   transform=from_origin(500000, 2800000, 0.3, 0.3), tiled=True, blockxsize=512, blockysize=512,
                   BIGTIFF="IF_SAFER", **({"compress": compress} if compress else {}))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        yy, xx = np.mgrid[0:block, 0:size]
        for y in range(0, size, block):
            h = min(block, size - y)
            base = (np.sin((yy[:h] + y) / 37.0) + np.cos(xx[:h] / 53.0)) * 60 + 128
            noise = rng.integers(-20, 20, (3, h, size))
            dst.write(np.clip(base[None] + noise, 0, 255).astype(np.uint8), window=Window(0, y, size, h))


def train_small_network(workdir: Path) -> Path:
    """A random DARTS-UNet genotype (C=8, depth 2) trained one epoch on synthetic 64 px patches."""
    data = workdir / "synth.h5"
    run = workdir / "run"
    from hpcnas.data.synth import synthesize
    from hpcnas.pipeline import train

    synthesize(data, n=32, size=64, seed=0)
    config = workdir / "c.yaml"
    config.write_text(
        f"seed: 0\ndevice: cpu\ndata: {{path: {data}}}\n"
        "space: {topology: darts_unet, channels: 8, depth: 2, nodes: 2}\n"
        "train: {epochs: 1, batch_size: 8, select_from_epoch: 1}\n"
    )
    train(str(config), [], genotype="random", out=str(run), device="cpu")
    return run / "checkpoints" / "best.pt"


def run_predict(checkpoint: Path, scene: Path, out: Path, args, overlap: Optional[int] = None) -> Dict[str, Any]:
    """``hpcnas predict`` on one scene in a child process: seconds and its own peak RSS (MB)."""
    overlap = args.overlap if overlap is None else overlap
    cmd = [*hpcnas_reporting_peak(), "predict", "--checkpoint", str(checkpoint), "--input", str(scene),
           "--out", str(out), "--tile", str(args.tile), "--overlap", str(overlap), "--batch", str(args.batch),
           "--device", args.device]  # fmt: skip
    cmd += ["--vector"] if args.vector else []
    peak_file = out.with_name(out.name + ".peak.json")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, PEAK_FILE: str(peak_file)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"hpcnas predict failed on {scene} (exit {proc.returncode})")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(json.loads(peak_file.read_text())["peak_rss_mb"], 1)}


def run_naive(checkpoint: Path, scene: Path, out: Path, args) -> float:
    """Seconds of benchmarks/_naive_predict.py on one scene, in a child process like hpcnas's."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "_naive_predict.py"), str(checkpoint), str(scene), str(out),
           str(args.tile), str(args.batch), args.device]  # fmt: skip
    start = time.perf_counter()
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"the naive script failed on {scene}")
    return time.perf_counter() - start


def against_naive(checkpoint: Path, scene: Path, work: Path, size: int, default_s: float, args) -> Dict[str, Any]:
    """The naive script and hpcnas --overlap 0 on the same scene, naive runs before and after (their mean)."""
    naive = [run_naive(checkpoint, scene, work / f"naive_{size}_{k}.tif", args) for k in (0,)]
    flat = run_predict(checkpoint, scene, work / f"out0_{size}", args, overlap=0)["seconds"]
    naive.append(run_naive(checkpoint, scene, work / f"naive_{size}_1.tif", args))
    naive_s = sum(naive) / len(naive)
    windows = {overlap: len(window_starts(size, args.tile, overlap)) ** 2 for overlap in (0, args.overlap)}
    naive_windows = (-(-size // args.tile)) ** 2
    target = 0.9 * naive_windows / windows[args.overlap]
    return {
        "naive_seconds": [round(v, 2) for v in naive],
        "naive_windows": naive_windows,
        "overlap0_seconds": round(flat, 2),
        "overlap0_windows": windows[0],
        "default_windows": windows[args.overlap],
        "overlap0_vs_naive": round(naive_s / flat, 3),  # goal >= 1.0
        "default_vs_naive": round(naive_s / default_s, 3),
        "default_goal": round(target, 3),  # 0.9 x naive windows / default windows
        "goals_met": naive_s / flat >= 1.0 and naive_s / default_s >= target,
    }


def scaling(args) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else train_small_network(work)
        for size in args.sizes:
            scene = work / f"scene_{size}.tif"
            t0 = time.perf_counter()
            write_scene(scene, size)
            print(f"wrote {size} x {size} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            measured = run_predict(checkpoint, scene, work / f"out_{size}", args)
            megapixels = size * size / 1e6
            rows.append({"size": size, "megapixels": round(megapixels, 1), **measured,
                         "megapixels_per_s": round(megapixels / measured["seconds"], 3)})  # fmt: skip
            if args.naive:
                rows[-1].update(against_naive(checkpoint, scene, work, size, measured["seconds"], args))
            print(rows[-1], file=sys.stderr, flush=True)
            scene.unlink()
    return {"device": args.device, "tile": args.tile, "overlap": args.overlap, "batch": args.batch,
            "vector": args.vector, "naive": args.naive,
            "checkpoint": args.checkpoint or "random DARTS-UNet cell, C=8, depth 2",
            "threads": os.environ.get("OMP_NUM_THREADS", "torch default"), "rows": rows}  # fmt: skip


def _near_window_borders(shape, tile: int, overlap: int, margin: int = 8) -> np.ndarray:
    """Pixels within ``margin`` of a window's inner border (where seams show)."""
    near = np.zeros(shape, bool)
    for axis, length in enumerate(shape):
        for start in window_starts(length, tile, overlap)[1:]:
            for edge in (start, start + tile - 1):
                lo, hi = max(0, edge - margin), min(length, edge + margin)
                if axis == 0:
                    near[lo:hi, :] = True
                else:
                    near[:, lo:hi] = True
    return near


def _blend_scores(args, checkpoint: str, scenes: Path, truths, info, tile, overlap, blend: str, out: Path):
    from hpcnas.train.metrics import confusion, summarize

    cmd = [sys.executable, "-m", "hpcnas.cli", "predict", "--checkpoint", checkpoint, "--input", str(scenes),
           "--out", str(out), "--blend", blend, "--device", args.device]  # fmt: skip
    cmd += ["--tile", str(tile), "--overlap", str(overlap)]
    if os.spawnv(os.P_WAIT, sys.executable, cmd) != 0:
        raise SystemExit(f"hpcnas predict --blend {blend} failed")
    whole = np.zeros((info.num_classes,) * 2, np.int64)
    border = np.zeros_like(whole)
    for name, truth in truths.items():
        import rasterio

        with rasterio.open(out / f"{name}_classes.tif") as src:
            pred = src.read(1)
        near = _near_window_borders(truth.shape, tile, overlap)
        whole += confusion(pred, truth, info.num_classes)
        border += confusion(np.where(near, pred, 255), np.where(near, truth, 255), info.num_classes)
    return {
        "miou": round(summarize(whole, info.class_names)["miou"], 4),
        "miou_near_window_borders": round(summarize(border, info.class_names)["miou"], 4),
    }


def seams(args) -> Dict[str, Any]:
    """Mean against smooth blending on the test images of ``args.seams``, for every checkpoint and window:
    mIoU over the whole images and over the pixels near a window border."""
    import rasterio
    from rasterio.transform import from_origin

    from hpcnas.data.hdf5 import PatchReader, read_info
    from hpcnas.train.evaluate import full_images

    info = read_info(args.seams)
    split = "test" if info.split_sizes.get("test") else "val"
    windows = [tuple(int(v) for v in w.split(":")) for w in args.windows.split(",")] if args.windows else [
        (info.tile_size, info.overlap)
    ]  # fmt: skip
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        scenes = work / "scenes"
        scenes.mkdir()
        truths = {}
        for k, item in enumerate(full_images(PatchReader(args.seams, split, info.num_classes), info, split)):
            image = np.moveaxis(item["image"], -1, 0)
            with rasterio.open(scenes / f"s{k}.tif", "w", driver="GTiff", height=image.shape[1],
                               width=image.shape[2], count=image.shape[0], dtype=image.dtype, crs="EPSG:32640",
                               transform=from_origin(500000, 2800000, 1, 1)) as dst:  # fmt: skip
                dst.write(image)
            truths[f"s{k}"] = item["truth"]
        for c, checkpoint in enumerate(args.checkpoint.split(",")):
            for tile, overlap in windows:
                row: Dict[str, Any] = {"checkpoint": checkpoint, "tile": tile, "overlap": overlap}
                for blend in ("mean", "smooth"):
                    out = work / f"{c}-{tile}-{overlap}-{blend}"
                    row[blend] = _blend_scores(args, checkpoint, scenes, truths, info, tile, overlap, blend, out)
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    wins = sum(r["smooth"]["miou_near_window_borders"] >= r["mean"]["miou_near_window_borders"] for r in rows)
    return {"data": args.seams, "split": split, "images": len(truths), "rows": rows,
            "smooth_not_worse_near_borders": f"{wins} of {len(rows)}"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,5000,20000", help="scene sizes in px (square)")
    parser.add_argument("--tile", type=int, default=None, help="window (default 256; --seams: the training tile)")
    parser.add_argument("--overlap", type=int, default=None, help="overlap (default 64; --seams: the training one)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vector", action="store_true", help="also write polygons")
    parser.add_argument("--naive", action="store_true", help="also time a naive script and --overlap 0, side by side")
    parser.add_argument("--checkpoint", help="a trained network (default: train a small one here); --seams: A,B,...")
    parser.add_argument("--windows", help="--seams: TILE:OVERLAP,... (default: the training tile and overlap)")
    parser.add_argument("--seams", metavar="DATA.h5", help="compare the blends on this data set's test images")
    parser.add_argument("--workdir", default=None, help="where the scenes are generated (default: the temp folder)")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    args.sizes = [int(v) for v in args.sizes.split(",")]
    if not args.seams:
        args.tile, args.overlap = args.tile or 256, 64 if args.overlap is None else args.overlap
    payload = seams(args) if args.seams else scaling(args)
    if not args.seams:
        print(f"{'size':>8} {'Mpx':>7} {'seconds':>9} {'Mpx/s':>7} {'peak RSS MB':>12}")
        for r in payload["rows"]:
            print(f"{r['size']:>8} {r['megapixels']:>7} {r['seconds']:>9} {r['megapixels_per_s']:>7} "
                  f"{r['peak_rss_mb']:>12}")  # fmt: skip
            if "naive_seconds" in r:
                print(f"{'':>8} naive {r['naive_seconds']} s ({r['naive_windows']} windows); overlap 0: "
                      f"{r['overlap0_vs_naive']}x naive (goal 1.0); default: {r['default_vs_naive']}x naive "
                      f"with {r['default_windows']} windows (goal {r['default_goal']}): "
                      f"{'met' if r['goals_met'] else 'NOT met'}")  # fmt: skip
    emit(payload, args.json)


if __name__ == "__main__":
    main()
