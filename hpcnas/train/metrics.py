"""Pixel metrics from confusion matrices (summable across batches and ranks)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

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


def summarize(conf: np.ndarray, class_names) -> Dict[str, Optional[float]]:
    """``{"miou": ..., "iou_<class>": ...}`` for a metrics record."""
    out: Dict[str, Optional[float]] = {"miou": miou(conf)}
    for name, v in zip(class_names, iou_per_class(conf)):
        out[f"iou_{name}"] = None if np.isnan(v) else float(v)
    return out


# --------------------------------------------------------------------------
# object level (paper Fig. 7): connected components matched one-to-one by IoU

IOU_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


def label_objects(mask: np.ndarray) -> "tuple[np.ndarray, int]":
    """8-connected components of a boolean mask: (labels, count)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, int(count)


def match_objects(pred: np.ndarray, truth: np.ndarray) -> "tuple[List[float], int, int]":
    """Greedy one-to-one matching of predicted to true objects by decreasing IoU.

    Returns the IoUs of the matched pairs, the number of predicted objects and
    the number of true objects.
    """
    p_lab, n_p = label_objects(pred)
    t_lab, n_t = label_objects(truth)
    if n_p == 0 or n_t == 0:
        return [], n_p, n_t
    joint = np.bincount(
        (p_lab.ravel().astype(np.int64) * (n_t + 1) + t_lab.ravel()), minlength=(n_p + 1) * (n_t + 1)
    ).reshape(n_p + 1, n_t + 1)
    inter = joint[1:, 1:].astype(np.float64)
    area_p = joint[1:, :].sum(1).astype(np.float64)
    area_t = joint[:, 1:].sum(0).astype(np.float64)
    iou = inter / (area_p[:, None] + area_t[None, :] - inter)
    pi, ti = np.nonzero(inter)
    order = sorted(range(len(pi)), key=lambda k: (-iou[pi[k], ti[k]], pi[k], ti[k]))
    used_p, used_t, matched = set(), set(), []
    for k in order:
        a, b = int(pi[k]), int(ti[k])
        if a not in used_p and b not in used_t:
            used_p.add(a)
            used_t.add(b)
            matched.append(float(iou[a, b]))
    return matched, n_p, n_t


class ObjectCounter:
    """Accumulates matches over images; precision and recall at each IoU threshold."""

    def __init__(self, thresholds=IOU_THRESHOLDS):
        self.thresholds = tuple(thresholds)
        self.matched: List[float] = []
        self.n_pred = 0
        self.n_true = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Count one image's boolean object masks."""
        matched, n_p, n_t = match_objects(pred, truth)
        self.matched += matched
        self.n_pred += n_p
        self.n_true += n_t

    def curve(self) -> Dict[str, Any]:
        """``{"thresholds", "precision", "recall"}`` lists (NaN-free: 0 when undefined)."""
        m = np.asarray(self.matched)
        tp = [int((m >= t - 1e-12).sum()) for t in self.thresholds]
        return {
            "thresholds": list(self.thresholds),
            "precision": [k / self.n_pred if self.n_pred else 0.0 for k in tp],
            "recall": [k / self.n_true if self.n_true else 0.0 for k in tp],
            "true_positives": tp,
            "objects_predicted": self.n_pred,
            "objects_true": self.n_true,
        }
