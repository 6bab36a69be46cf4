"""The embedded synthetic data set: small rotorcraft-like objects on textured ground.

It has the traits of the paper's helicopter data: tiny objects (a rotor disk
and a tail boom, random pose and scale), strong class imbalance, empty
patches, distractor shapes, and objects cut by patch borders (scenes are drawn
large and tiled with overlap, exactly like real images).  Everything is a
pure function of the seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from hpcnas.data.hdf5 import create_dataset
from hpcnas.data.raster import Scene
from hpcnas.data.tile import assign_splits, tile_scene
from hpcnas.errors import UserError
from hpcnas.rundir import PathLike

CLASS_NAMES = ("background", "rotorcraft")


def overlap_for(size: int) -> int:
    """The paper's overlap ratio (180 / 512) scaled to a tile size."""
    return int(round(size * 180 / 512))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave value noise in [0, 1], (h, w)."""
    out = np.zeros((h, w), dtype=np.float32)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32):
        coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
        ys = np.linspace(0, cells, h, dtype=np.float32)
        xs = np.linspace(0, cells, w, dtype=np.float32)
        y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        a = coarse[y0][:, x0]
        b = coarse[y0][:, x0 + 1]
        c = coarse[y0 + 1][:, x0]
        d = coarse[y0 + 1][:, x0 + 1]
        out += amp * ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy)
        total += amp
        amp *= 0.5
    return out / total


def _rotorcraft(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float, angle: float) -> np.ndarray:
    """Boolean footprint: rotor disk, fuselage and tail boom with a tail rotor."""
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u = dx * c + dy * s  # along the boom
    v = -dx * s + dy * c
    disk = dy**2 + dx**2 <= radius**2
    body = (u / (0.55 * radius)) ** 2 + (v / (0.28 * radius)) ** 2 <= 1.0
    boom = (u <= -0.2 * radius) & (u >= -1.7 * radius) & (np.abs(v) <= 0.09 * radius + 0.6)
    tail = (u + 1.7 * radius) ** 2 + v**2 <= (0.3 * radius) ** 2
    return disk | body | boom | tail


def draw_scene(rng: np.random.Generator, h: int, w: int, tile: int) -> Tuple[np.ndarray, np.ndarray]:
    """One RGB scene and its binary mask."""
    ground = _texture(rng, h, w)
    tint = rng.uniform(0.35, 0.75, size=3).astype(np.float32)
    image = ground[..., None] * 0.5 + tint[None, None, :] * 0.5
    image += rng.normal(0, 0.03, size=(h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # distractors: rectangles and discs of ground-like colours, never labelled
    for _ in range(rng.integers(1, 4)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        hh, ww = rng.integers(tile // 16 + 2, tile // 5 + 3, size=2)
        image[y0 : y0 + hh, x0 : x0 + ww] = rng.uniform(0.2, 0.9, size=3)
    # objects; about a third of the tile-sized areas stay empty
    count = rng.poisson(max(1.0, h * w / tile**2 * 1.2))
    for _ in range(count):
        radius = rng.uniform(0.05, 0.11) * tile
        cy, cx = rng.uniform(-radius, h + radius), rng.uniform(-radius, w + radius)
        shape = _rotorcraft(yy, xx, cy, cx, radius, rng.uniform(0, 2 * math.pi))
        shade = rng.uniform(0.05, 0.3) if rng.random() < 0.5 else rng.uniform(0.75, 0.95)
        image[shape] = shade + rng.normal(0, 0.02, size=(int(shape.sum()), 3))
        mask[shape] = 1
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def synthesize(
    out: PathLike, n: int = 48, size: int = 64, seed: int = 0, val_fraction: float = 0.25, test_fraction: float = 0.25
) -> Dict[str, int]:
    """Write a synthetic data set of exactly ``n`` patches to ``out``; returns patches per split.

    Scenes of 2x2 overlapping tiles are drawn and tiled (so objects are cut by
    patch borders); the ``n mod 4`` remaining patches come from one-tile scenes.
    """
    if n < 1:
        raise UserError(f"needs at least 1 patch, got {n}", source="--n")
    if size < 16:
        raise UserError(f"patches must be at least 16 px, got {size}", source="--size")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            f"fractions must be in [0, 1) and sum below 1, got {val_fraction} + {test_fraction}",
            source="--val-fraction/--test-fraction",
        )
    if Path(out).is_dir():
        raise UserError("is a directory: give the path of the .h5 file to write", source=str(out))
    overlap = overlap_for(size)
    big = 2 * size - overlap
    shapes = [(big, big)] * (n // 4) + [(size, size)] * (n % 4)
    rng = np.random.default_rng(seed)
    splits = assign_splits(len(shapes), val_fraction, test_fraction, seed)
    with create_dataset(out, CLASS_NAMES, size, overlap, channels=3) as writer:
        for i, ((h, w), split) in enumerate(zip(shapes, splits)):
            image, mask = draw_scene(rng, h, w, size)
            src = writer.add_source(f"scene_{i:04d}", (h, w), split)
            scenes = Scene.from_array(image), Scene.from_array(mask, role="mask")
            for patch, mpatch, offset, extent, _ in tile_scene(*scenes, size, overlap):
                writer.add_patch(patch, mpatch, src, offset, extent)
        return writer.patch_counts()
