"""Sliding-window inference over a scene of any size, streamed in strips of rows.

Windows of ``tile`` pixels step by ``tile - overlap``; the last window of a
row or column is flush with the scene's border, so no window reads padding
except on scenes smaller than one tile.  Overlapping logits are blended with
per-pixel weights and the blend is normalized by the weights' sum, so a
model that outputs the same logits everywhere is reproduced exactly.  Only
``tile`` rows of the scene's width are held at once: memory does not grow
with the scene's height, and grows with its width by ``classes x tile x 4``
bytes per column.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Tuple

import numpy as np

BLENDS = ("mean", "smooth")


def window_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Window offsets along one axis: stride ``tile - overlap``, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_weights(tile: int, overlap: int, blend: str) -> np.ndarray:
    """(tile, tile) weights of one window's logits.

    ``mean`` weighs every pixel 1 (what ``evaluate`` does with the tiles of
    a data set).  ``smooth`` ramps linearly from a small floor at the window's
    border to 1 at ``overlap / 2`` inside it, so a pixel takes most of its
    value from the window that sees it furthest from a border.
    """
    if blend == "mean" or overlap == 0:
        return np.ones((tile, tile), np.float32)
    if blend != "smooth":
        raise ValueError(f"unknown blend {blend!r}")
    ramp = max(1.0, overlap / 2)
    edge = np.minimum(np.arange(tile) + 0.5, tile - np.arange(tile) - 0.5)
    line = np.clip(edge / ramp, 0.05, 1.0).astype(np.float32)
    return np.outer(line, line)


Predictor = Callable[[np.ndarray], np.ndarray]  # (N, tile, tile, bands) raw pixels -> (N, classes, tile, tile)
Reader = Callable[[int, int, int, int], Tuple[np.ndarray, np.ndarray]]  # (y, x, h, w) -> (pixels, valid)


def sliding_strips(
    height: int,
    width: int,
    read: Reader,
    predict: Predictor,
    classes: int,
    tile: int,
    overlap: int,
    blend: str = "mean",
    batch: int = 8,
    on_window: Callable[[], None] = lambda: None,
) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(y, logits (classes, h, width), valid (h, width))`` strips, top to bottom, covering the scene once.

    ``valid`` is false where the scene has no data; its logits are still the
    blend of the windows (padding of small scenes is cut off).
    """
    weights = blend_weights(tile, overlap, blend)
    rows, cols = window_starts(height, tile, overlap), window_starts(width, tile, overlap)
    span = min(tile, height)
    total = np.zeros((classes, span, width), np.float32)
    weight_sum = np.zeros((span, width), np.float32)
    valid = np.zeros((span, width), bool)
    for i, y in enumerate(rows):
        for start in range(0, len(cols), batch):
            xs = cols[start : start + batch]
            windows = [read(y, x, tile, tile) for x in xs]
            logits = predict(np.stack([w[0] for w in windows]))
            for x, (_, window_valid), out in zip(xs, windows, logits):
                h, w = min(tile, height - y), min(tile, width - x)
                total[:, :h, x : x + w] += out[:, :h, :w] * weights[:h, :w]
                weight_sum[:h, x : x + w] += weights[:h, :w]
                valid[:h, x : x + w] |= window_valid[:h, :w]
                on_window()
        done = (rows[i + 1] - y) if i + 1 < len(rows) else min(span, height - y)
        yield y, total[:, :done] / weight_sum[:done], valid[:done].copy()
        # rows [y, y + done) are final; move the rest up to make room for the next row of windows
        keep = span - done
        total[:, :keep], weight_sum[:keep], valid[:keep] = total[:, done:], weight_sum[done:], valid[done:]
        total[:, keep:], weight_sum[keep:], valid[keep:] = 0.0, 0.0, False


def count_windows(height: int, width: int, tile: int, overlap: int) -> int:
    """How many windows :func:`sliding_strips` runs on a scene."""
    return len(window_starts(height, tile, overlap)) * len(window_starts(width, tile, overlap))
