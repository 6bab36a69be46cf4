"""Pixel metrics from confusion matrices (summable across batches and ranks)."""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from hpcnas.data.hdf5 import IGNORE_INDEX


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = truth, columns = prediction; ignore pixels skipped."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = target != IGNORE_INDEX
    idx = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> List[float]:
    """Intersection over union per class; a class absent from truth and prediction is NaN."""
    conf = np.asarray(conf, dtype=np.float64)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return list(np.where(union > 0, inter / union, np.nan))


def miou(conf: np.ndarray) -> float:
    """Mean IoU over the classes present in truth or prediction."""
    values = [v for v in iou_per_class(conf) if not np.isnan(v)]
    return float(np.mean(values)) if values else 0.0


def summarize(conf: np.ndarray, class_names) -> Dict[str, float]:
    """``{"miou": ..., "iou_<class>": ...}`` for a metrics record."""
    out = {"miou": miou(conf)}
    for name, v in zip(class_names, iou_per_class(conf)):
        out[f"iou_{name}"] = None if np.isnan(v) else float(v)
    return out
