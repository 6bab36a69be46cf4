"""``hpcnas predict``: a trained network over a folder of scenes, georeferenced outputs per scene.

Every scene is checked before the first is predicted (it opens, its bands
and type are what the network was trained on), and nothing is overwritten:
outputs already present are an error, or with ``resume`` mark the scenes to
skip, so a killed batch job loses at most the scene it was on.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from hpcnas.data.raster import PILLOW_SUFFIXES, SCENE_SUFFIXES, Scene
from hpcnas.errors import UserError
from hpcnas.predict.engines import Engine, ModelCard, engine_for
from hpcnas.predict.outputs import MapQuantity, OutputOptions, class_map, open_outputs, scene_outputs, softmax
from hpcnas.predict.sliding import BLENDS, count_windows, sliding_strips
from hpcnas.progress import Progress
from hpcnas.rundir import make_folders, remove_if_empty

log = logging.getLogger("hpcnas")


@dataclass
class PredictOptions:
    """How to predict: window, overlap, batch, blend, and what to write besides the class map."""

    tile: Optional[int] = None  # default: the tile the network was trained on
    overlap: Optional[int] = None  # default: the training overlap
    batch: int = 8
    blend: str = "smooth"  # measured against "mean" on the Dubai test images: never worse near window borders
    probabilities: bool = False
    vector: bool = False
    resume: bool = False
    part: Optional[str] = None  # "K/N": every N-th scene from the K-th (a job array task)
    cog: bool = False  # Cloud-Optimized GeoTIFFs
    min_area: str = "4px"  # polygons: smaller objects are dropped (map units, or pixels with "px")
    simplify: str = "1px"  # polygons: outline tolerance (map units, or pixels with "px")

    def outputs(self) -> OutputOptions:
        """What each scene's files hold (a bad --min-area or --simplify is a one-line error)."""
        return OutputOptions(
            probabilities=self.probabilities,
            vector=self.vector,
            cog=self.cog,
            min_area=MapQuantity.parse(self.min_area, "--min-area"),
            simplify=MapQuantity.parse(self.simplify, "--simplify"),
        )


def list_scenes(source: str) -> List[Path]:
    """One scene file, or the scene files of a folder (sorted, not recursive)."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError("no such file or folder", source=source)
    scenes = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
    if not scenes:
        raise UserError(f"no scenes ({', '.join(SCENE_SUFFIXES)}) in this folder", source=source)
    return scenes


def select_part(scenes: List[Path], part: Optional[str]) -> List[Path]:
    """The scenes of part ``"K/N"`` (every N-th from the K-th, K counted from 0); all of them for ``None``."""
    if not part:
        return scenes
    try:
        k, n = (int(v) for v in part.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        raise UserError(f"expected K/N with 0 <= K < N, got '{part}'", source="--part") from None
    return scenes[k::n]


def check_scene(path: Path, engine: Engine) -> Scene:
    """Open a scene and check it against the network's card (bands, type); warns when it has no CRS."""
    card = engine.card
    scene = Scene(path, card.bands)
    if scene.channels != card.in_channels or scene.dtype != card.dtype:
        scene.close()
        raise UserError(
            f"scene has {scene.channels} band(s) of {scene.dtype}, the network was trained on {card.in_channels} "
            f"of {card.dtype}" + (f" (bands {','.join(map(str, card.bands))})" if card.bands else ""),
            source=str(path),
        )
    if not scene.georeferenced and path.suffix.lower() not in PILLOW_SUFFIXES:
        print(f"hpcnas: warning: {path}: no CRS or transform: outputs are in pixel coordinates", file=sys.stderr)
    return scene


def check_window(engine: Engine, tile: int) -> None:
    """One forward pass of a blank window: a size the network cannot take is a one-line error, up front."""
    import numpy as np

    blank = np.zeros((1, engine.card.in_channels, tile, tile), np.float32)
    try:
        engine(blank)
    except Exception as exc:  # noqa: BLE001 - torch and onnxruntime report a bad input size in their own types
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"the network cannot take {tile} px windows ({first}): use the training tile or a multiple of the "
            "network's stride",
            source="--tile",
        ) from None


def window_overlap(card: ModelCard, tile: int, overlap: Optional[int]) -> int:
    """The overlap asked for, else the training overlap (scaled to another tile), else a quarter of the tile."""
    if overlap is not None:
        return overlap
    if card.overlap is None or not card.tile_size:
        return tile // 4
    return min(round(card.overlap * tile / card.tile_size), tile - 1)


def predict_scene(
    scene: Scene, engine: Engine, paths: Dict[str, Path], options: PredictOptions, tile: int, overlap: int
) -> float:
    """Predict one scene into its output files; returns the seconds it took."""
    card = engine.card
    norm = card.norm
    as_png = scene.path.suffix.lower() in PILLOW_SUFFIXES
    writers = open_outputs(paths, scene, card.class_names, options.outputs(), as_png)
    total = count_windows(scene.height, scene.width, tile, overlap)
    bar = Progress(total, f"predict {scene.path.name}", "windows")
    start = time.perf_counter()
    try:
        strips = sliding_strips(
            scene.height,
            scene.width,
            scene.read,
            lambda batch: engine(norm.apply(batch)),
            card.num_classes,
            tile,
            overlap,
            blend=options.blend,
            batch=options.batch,
            on_window=bar.update,
        )
        for y, logits, valid in strips:
            ids = class_map(logits, valid)
            if "probabilities" in writers or "vector" in writers:
                probs = softmax(logits)
                if "probabilities" in writers:
                    writers["probabilities"].write(y, probs)
                if "vector" in writers:
                    writers["vector"].write(y, ids, probs.max(axis=0))
            writers["classes"].write(y, ids)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    for writer in writers.values():  # the class map last: its presence marks the scene done
        writer.commit()
    return time.perf_counter() - start


GDAL_CACHE_MB = 128  # two rows of 512 px input blocks of a 20,000 px wide 3-band scene, and the output rows


def _bounded_gdal_cache():
    """GDAL's block cache defaults to 5 % of the node's memory (25 GB on a 512 GB node): bound it, so the
    memory of a prediction depends on the scene's width and the window only."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def predict(
    checkpoint: str, source: str, out: str, options: PredictOptions, engine: str = "auto", device: str = "auto"
) -> Dict[str, int]:
    """Predict every scene of ``source`` into ``out``; returns counts of scenes ``predicted`` and ``skipped``."""
    if options.blend not in BLENDS:
        raise UserError(f"unknown blend '{options.blend}' (known: {', '.join(BLENDS)})", source="--blend")
    if options.batch < 1:
        raise UserError(f"must be at least 1, got {options.batch}", source="--batch")
    check_tile(options.tile)
    options.outputs()  # --min-area and --simplify are checked before any scene is read
    scenes = select_part(list_scenes(source), options.part)
    net = engine_for(checkpoint, engine, device)
    card = net.card
    tile = options.tile or card.tile_size or net.fixed_tile
    if tile is None:
        raise UserError("this checkpoint does not record its training tile: give --tile", source=checkpoint)
    if net.fixed_tile is not None and tile != net.fixed_tile:
        raise UserError(f"the exported model takes {net.fixed_tile} px windows, not {tile}", source="--tile")
    overlap = window_overlap(card, tile, options.overlap)
    if not 0 <= overlap < tile:
        raise UserError(f"must be in [0, {tile}), got {overlap}", source="--overlap")
    check_window(net, tile)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("exists and is not a folder", source=out)
    stems = [p.stem for p in scenes]
    twins = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twins:
        raise UserError(f"several scenes are called '{twins[0]}' (their outputs would collide)", source=source)
    plan = []
    for path in scenes:  # check every scene first: a bad one found after an hour of work wastes the hour
        scene = check_scene(path, net)
        paths = scene_outputs(out_dir, path, scene.georeferenced or path.suffix.lower() not in PILLOW_SUFFIXES)
        scene.close()
        present = [p for p in paths.values() if p.exists()]
        if paths["classes"].exists() and options.resume:
            continue
        if present and not options.resume:  # with --resume: the leftovers of a scene cut short, redone
            raise UserError(
                f"{present[0]} already exists: add --resume to skip the scenes already predicted, "
                "or choose another --out",
                source=str(path),
            )
        plan.append((path, paths))
    created = make_folders(out_dir, out)
    try:
        for path, paths in plan:
            predict_one(path, paths, net, options, tile, overlap)
    except BaseException:
        remove_if_empty(created)  # a failed first scene leaves no empty output folder behind
        raise
    return {"predicted": len(plan), "skipped": len(scenes) - len(plan)}


def predict_one(
    path: Path, paths: Dict[str, Path], net: Engine, options: PredictOptions, tile: int, overlap: int
) -> None:
    """Predict one scene (its outputs appear complete or not at all) and log its speed."""
    with _bounded_gdal_cache(), Scene(path, net.card.bands) as scene:
        seconds = predict_scene(scene, net, paths, options, tile, overlap)
    log.info(
        "%s: %dx%d px in %.1f s (%.2f Mpx/s) -> %s",
        path.name,
        scene.width,
        scene.height,
        seconds,
        scene.width * scene.height / 1e6 / max(seconds, 1e-9),
        paths["classes"],
    )


def check_tile(tile: Optional[int]) -> None:
    """A window size given on the command line must be a positive number of pixels (0 is not 'the default')."""
    if tile is not None and tile < 1:
        raise UserError(f"must be a positive number of pixels, got {tile}", source="--tile")
