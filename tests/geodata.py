"""Small GeoTIFF data written by the tests, and a network trained on it (predict and cluster tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from hpcnas.data.tile import tile_folder

CRS = "EPSG:32640"
PIXEL = 0.5


def write_tif(path, array, transform=None, crs=CRS, nodata=None):
    """A GeoTIFF of (bands, H, W) ``array``; ``transform=False`` writes one without georeferencing."""
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0])
    profile.update(dtype=str(array.dtype), nodata=nodata)
    if transform is not False:
        profile.update(crs=crs, transform=transform or from_origin(500000, 2770000, PIXEL, PIXEL))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def draw(rng, h, w, bands=4):
    """16-bit bands around 1000, band 2 brighter on square objects; the top-left 3x3 pixels are nodata (0)."""
    mask = np.zeros((h, w), np.uint8)
    for _ in range(5):
        y, x = rng.integers(4, h - 10), rng.integers(4, w - 10)
        mask[y : y + 6, x : x + 6] = 1
    image = rng.normal(1000, 40, (bands, h, w))
    image[1] += mask * 400.0
    image = image.astype(np.uint16)
    image[:, :3, :3] = 0
    return image, mask


def make_geo_run(root: Path, scenes: int = 1) -> Path:
    """GeoTIFF images and masks in ROOT, tiled with bands 2,3,1 into ROOT/d.h5, a network trained on them for a
    few epochs (ROOT/run), and new scenes to predict in ROOT/scenes."""
    from hpcnas.pipeline import train

    rng = np.random.default_rng(0)
    for d in ("images", "masks", "scenes"):
        (root / d).mkdir()
    for i in range(4):
        image, mask = draw(rng, 80 + 7 * i, 96)
        transform = from_origin(500000 + 1000 * i, 2770000, PIXEL, PIXEL)
        write_tif(root / "images" / f"s{i}.tif", image, transform, nodata=0)
        write_tif(root / "masks" / f"s{i}.tif", mask[None], transform)
    for k in range(scenes):
        scene, _ = draw(rng, 75, 101)
        write_tif(root / "scenes" / ("new.tif" if k == 0 else f"new{k}.tif"), scene, nodata=0)
    data = root / "d.h5"
    tile_folder(root / "images", root / "masks", data, size=32, overlap=8, val_fraction=0.25, bands=[2, 3, 1])
    config = root / "c.yaml"
    config.write_text(
        f"seed: 0\ndevice: cpu\ndata: {{path: {data}}}\n"
        "space: {topology: darts_unet, channels: 8, depth: 2, nodes: 2}\n"
        "train: {epochs: 4, batch_size: 8, select_from_epoch: 1, lr: 0.05}\n"
    )
    train(str(config), [], genotype="random", out=str(root / "run"), device="cpu")
    return root
