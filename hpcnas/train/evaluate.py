"""Evaluation on full images: reassemble tiles, pixel IoU / mIoU, object precision-recall.

The paper evaluates on full-size test images.  Every source image of the
split is rebuilt from its overlapping tiles using the offsets stored in the
HDF5 file: logits are averaged where tiles overlap, the truth is copied (it
is identical in overlaps), padded pixels are dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from hpcnas.data.hdf5 import IGNORE_INDEX, PatchReader, read_info
from hpcnas.errors import UserError
from hpcnas.progress import progress
from hpcnas.rundir import RunDir, write_json
from hpcnas.train.metrics import ObjectCounter, confusion, summarize

log = logging.getLogger("hpcnas")


class Canvas:
    """A full image assembled from tiles: sums and counts, averaged on read."""

    def __init__(self, shape: Tuple[int, ...], height: int, width: int):
        self.total = np.zeros(shape + (height, width), dtype=np.float64)
        self.count = np.zeros((height, width), dtype=np.int32)

    def add(self, tile: np.ndarray, offset, valid) -> None:
        """Add the valid part of a (..., S, S) tile at (y, x)."""
        (y, x), (vh, vw) = offset, valid
        self.total[..., y : y + vh, x : x + vw] += tile[..., :vh, :vw]
        self.count[y : y + vh, x : x + vw] += 1

    def mean(self) -> np.ndarray:
        """The per-pixel average of every tile that covered it."""
        return self.total / np.maximum(self.count, 1)


def full_images(
    reader: PatchReader, info, split: str, predict=None, batch_size: int = 8
) -> Iterator[Dict[str, np.ndarray]]:
    """Yield each source image of ``split``: ``name``, ``image``, ``truth`` and, with ``predict``, ``logits``.

    ``predict`` maps a (N, H, W, C) uint8 batch to (N, classes, H, W) logits.
    """
    sources = reader.meta("source")
    offsets = reader.meta("offsets")
    valid = reader.meta("valid")
    for src in sorted(set(sources.tolist())):
        idx = np.nonzero(sources == src)[0]
        h, w = (int(v) for v in info.source_shapes[src])
        image = Canvas((info.channels,), h, w)
        truth = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
        logits = Canvas((info.num_classes,), h, w) if predict else None
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            pairs = [reader.read(int(i)) for i in chunk]
            out = predict(np.stack([p[0] for p in pairs])) if predict else None
            for k, i in enumerate(chunk):
                img, mask = pairs[k]
                image.add(np.moveaxis(img, -1, 0).astype(np.float64), offsets[i], valid[i])
                (y, x), (vh, vw) = offsets[i], valid[i]
                truth[y : y + vh, x : x + vw] = mask[:vh, :vw]
                if logits is not None:
                    logits.add(out[k], offsets[i], valid[i])
        item = {
            "name": info.sources[src],
            "image": np.moveaxis(image.mean(), 0, -1).round().astype(info.dtype),
            "truth": truth,
        }
        if logits is not None:
            item["logits"] = logits.mean()
        yield item


def load_model(checkpoint: str, device: torch.device):
    """The network and its spec from a training checkpoint (best.pt or latest.pt)."""
    from hpcnas.checkpoint import load_checkpoint
    from hpcnas.train.spec import ModelSpec

    state = load_checkpoint(Path(checkpoint), device)
    raw = state.get("spec") or state.get("extra", {}).get("spec")
    if raw is None:
        raise UserError(
            "not a training checkpoint (no model spec; search checkpoints hold a supernet: train its genotype first)",
            source=checkpoint,
        )
    spec = ModelSpec.from_dict(raw, checkpoint)
    model = spec.build().to(device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:  # torch lists every mismatched tensor: the first line says enough
        raise UserError(
            f"the weights do not fit the network its spec describes ({str(exc).splitlines()[0][:160]})",
            source=checkpoint,
        ) from None
    model.eval()
    return model, spec


def evaluate(
    checkpoint: str,
    data: str,
    split: str = "test",
    out: Optional[Path] = None,
    device: Optional[torch.device] = None,
    examples: int = 4,
) -> Dict:
    """Full-image metrics of a trained network; writes ``evaluation.json`` (+ prediction examples) to ``out``."""
    device = device or torch.device("cpu")
    model, spec = load_model(checkpoint, device)
    info = read_info(data)
    if split not in info.split_sizes or info.split_sizes[split] == 0:
        raise UserError(
            f"split '{split}' is empty (splits: {', '.join(f'{k} {v}' for k, v in info.split_sizes.items())})",
            source=data,
        )
    if spec.num_classes != info.num_classes or spec.in_channels != info.channels:
        raise UserError(
            f"the checkpoint has {spec.num_classes} classes / {spec.in_channels} channels, "
            f"the data {info.num_classes} / {info.channels}",
            source=data,
        )

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(info.normalization.apply(batch)).to(device)
        return model(x).float().cpu().numpy()

    reader = PatchReader(data, split, info.num_classes)
    n_images = len(set(reader.meta("source").tolist()))
    conf = np.zeros((info.num_classes, info.num_classes), dtype=np.int64)
    objects = ObjectCounter()
    shown: List[Dict[str, np.ndarray]] = []
    for item in progress(full_images(reader, info, split, predict), n_images, f"evaluate {split}", unit="images"):
        pred = item.pop("logits").argmax(0).astype(np.uint8)
        truth = item["truth"]
        conf += confusion(pred, truth, info.num_classes)
        labelled = truth != IGNORE_INDEX
        objects.add((pred > 0) & labelled, (truth > 0) & labelled)  # foreground objects vs background
        if len(shown) < examples:
            shown.append({**item, "pred": pred})
    reader.close()
    result = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "images": n_images,
        **summarize(conf, info.class_names),
        "objects": objects.curve(),
        "confusion": conf.tolist(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(RunDir(out).evaluation, result)
        np.savez_compressed(
            RunDir(out).predictions,
            **{f"{k}_{i}": v for i, ex in enumerate(shown) for k, v in ex.items() if k != "name"},
            names=np.array([ex["name"] for ex in shown]),
        )
    curve = result["objects"]
    log.info(
        "%s: mIoU %.4f, object recall@0.5 %.3f, precision@0.5 %.3f",
        split,
        result["miou"],
        curve["recall"][4],
        curve["precision"][4],
    )
    return result
