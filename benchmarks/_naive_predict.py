"""The naive prediction script a user would write, for benchmarks/predict.py --naive to measure hpcnas against.

Reads the scene with rasterio in non-overlapping windows of TILE px, runs the same network (hpcnas's torch
engine: the checkpoint's own normalization) on batches of them, writes the arg-max as a tiled GeoTIFF with
the scene's CRS and transform.  No blend, no nodata handling, no progress, no atomic write.

    python benchmarks/_naive_predict.py CHECKPOINT SCENE OUT.tif TILE BATCH DEVICE
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpcnas.predict.engines import engine_for  # noqa: E402


def main() -> None:
    checkpoint, scene, out, tile, batch, device = sys.argv[1:7]
    tile, batch = int(tile), int(batch)
    net = engine_for(checkpoint, "torch", device)
    norm = net.card.norm
    with rasterio.open(scene) as src:
        profile = dict(src.profile, count=1, dtype="uint8", tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate")  # fmt: skip
        with rasterio.open(out, "w", **profile) as dst:
            windows = [(y, x) for y in range(0, src.height, tile) for x in range(0, src.width, tile)]
            for k in range(0, len(windows), batch):
                chunk = windows[k : k + batch]
                pixels = np.zeros((len(chunk), tile, tile, src.count), src.dtypes[0])
                for i, (y, x) in enumerate(chunk):
                    w = Window(x, y, min(tile, src.width - x), min(tile, src.height - y))
                    data = src.read(window=w)
                    pixels[i, : data.shape[1], : data.shape[2]] = np.moveaxis(data, 0, -1)
                classes = net(norm.apply(pixels)).argmax(axis=1).astype(np.uint8)
                for i, (y, x) in enumerate(chunk):
                    h, w = min(tile, src.height - y), min(tile, src.width - x)
                    dst.write(classes[i, :h, :w][None], window=Window(x, y, w, h))


if __name__ == "__main__":
    main()
