"""Matplotlib figures of a run's records (PNG, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# at least 9 pt everywhere: figures are shown at page width, several panels side by side
matplotlib.rcParams.update({"font.size": 10, "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9})

from hpcnas.records import Evaluation  # noqa: E402
from hpcnas.strategies.objectives import HYPERVOLUME_BASIS, Objective  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(runs: Dict[str, List[dict]], path: Path) -> Path:
    """Training loss and validation mIoU per epoch, one line per run."""
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(11, 4))
    for label, records in runs.items():
        epochs = [r["epoch"] for r in records]
        ax_loss.plot(epochs, [r.get("train_loss") for r in records], marker=".", label=label)
        if any("val_miou" in r for r in records):
            ax_miou.plot(epochs, [r.get("val_miou") for r in records], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train.loss", title="training loss")
    ax_miou.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU", ylim=(0, 1))
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return _save(fig, path)


def entropy_curves(runs: Dict[str, List[dict]], path: Path) -> Path:
    """Entropy of theta per cell type over epochs (paper Fig. 3), divided by ln|O|: the convergence indicator."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, records in runs.items():
        epochs = [r["epoch"] for r in records]
        # every cell any epoch has (auto:K stops recording the blocks it leaves hand-designed)
        cells = dict.fromkeys(cell for r in records for cell in r["entropy_normalized"])
        for cell in cells:
            style = "-" if cell == "mean" else "--"
            values = [r["entropy_normalized"].get(cell, math.nan) for r in records]
            ax.plot(epochs, values, style, marker=".", label=f"{label}: {cell}")
    ax.axhline(1.0, color="grey", linewidth=1, linestyle=":", label="uniform (no preference)")
    ax.set(
        xlabel="epoch",
        ylabel="entropy of theta / ln|O|",
        title="architecture entropy per cell (1 = uniform)",
        ylim=(0, 1.05),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path)


def precision_recall(evaluations: Dict[str, dict], path: Path) -> Path:
    """Object precision and recall vs IoU threshold, runs overlaid (paper Figs. 7, 13)."""
    fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    for label, ev in evaluations.items():
        curve = ev["objects"]
        ax_p.plot(curve["thresholds"], curve["precision"], marker="o", label=f"{label} (mIoU {ev['miou']:.3f})")
        ax_r.plot(curve["thresholds"], curve["recall"], marker="o", label=label)
    ax_p.set(xlabel="IoU threshold", ylabel="precision", title="object precision", ylim=(0, 1.02))
    ax_r.set(xlabel="IoU threshold", ylabel="recall", title="object recall", ylim=(0, 1.02))
    for ax in (ax_p, ax_r):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return _save(fig, path)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, bands) image of any type as (H, W, 3) in [0, 1]: 8-bit RGB as is, other data (16-bit, more or
    fewer bands) from its first three bands, stretched between the 2nd and 98th percentiles."""
    if image.dtype == np.uint8 and image.shape[-1] == 3:
        return image.astype(np.float32) / 255.0
    rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    lo, hi = np.percentile(rgb, [2, 98])
    return np.clip((rgb.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1)


def prediction_examples(examples: Sequence[Dict[str, np.ndarray]], path: Path) -> Path:
    """Rows of image | truth | prediction (paper Figs. 9, 12); ignore pixels shown grey."""
    rows = len(examples)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for row, ex in zip(axes, examples):
        row[0].imshow(display_rgb(ex["image"]))
        truth = np.where(ex["truth"] == 255, np.nan, ex["truth"].astype(float))
        row[1].imshow(
            truth,
            cmap="viridis",
            vmin=0,
            vmax=max(1, np.nanmax(truth) if np.isfinite(truth).any() else 1),
            interpolation="nearest",
        )
        row[2].imshow(ex["pred"], cmap="viridis", vmin=0, vmax=max(1, int(ex["pred"].max())), interpolation="nearest")
        for ax, title in zip(row, (ex.get("name", "image"), "truth", "prediction")):
            ax.set_title(str(title), fontsize=9)
            ax.axis("off")
    return _save(fig, path)


def evolution_history(history: List[dict], path: Path) -> Path:
    """Discrete search: fitness of every evaluation over time, and counts by status."""
    fig, (ax_f, ax_s) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    t0 = min(r.get("start", r.get("end", 0)) or 0 for r in history)
    ok = [r for r in history if r.get("status") == "ok" and r.get("fitness") is not None]
    ends = [(r["end"] - t0) / 60 for r in ok]
    ax_f.scatter(ends, [r["fitness"] for r in ok], s=14, alpha=0.7, label="evaluations")
    if ok:
        order = np.argsort(ends)
        best = np.maximum.accumulate(np.array([ok[i]["fitness"] for i in order]))
        ax_f.step(np.array(ends)[order], best, where="post", color="C3", label="best so far")
    ax_f.set(xlabel="minutes since start", ylabel="fitness (val mIoU)", title="fitness over time")
    ax_f.grid(alpha=0.3)
    ax_f.legend(fontsize=9)
    statuses = ["ok", "oom", "crashed", "timeout"]
    counts = [sum(1 for r in history if r.get("status") == s) for s in statuses]
    ax_s.bar(statuses, counts, color=["C2", "C1", "C3", "C7"])
    ax_s.set(title="evaluations by status")
    for k, c in enumerate(counts):
        ax_s.text(k, c, str(c), ha="center", va="bottom")
    return _save(fig, path)


COST_LABELS = {
    "params": "parameters",
    "flops": "FLOPs per tile",
    "latency": "latency (ms)",
    "peak_memory": "peak training memory (MB)",
}


def accuracy_against_costs(
    history: List[Evaluation], objectives: Sequence[Objective], front: List[Evaluation], path: Path
) -> Path:
    """Discrete search: val mIoU against each measured cost, the front of the configured objectives in red."""
    ok = [e for e in history if e.ok]
    costs = [c for c in COST_LABELS if any(c in e.objectives for e in ok)] or ["params"]
    columns = min(2, len(costs))  # two panels a row: text stays readable at page width
    rows = -(-len(costs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(costs) :]:
        ax.set_visible(False)
    front_ids = {e.id for e in front}
    bounded = {o.name: o.bound for o in objectives if o.bound is not None}
    for ax, cost in zip(axes.flat, costs):
        pts = [(e.objectives.get(cost), e.fitness, e.id in front_ids) for e in ok if e.objectives.get(cost) is not None]
        rest = [(x, y) for x, y, on in pts if not on]
        top = sorted((x, y) for x, y, on in pts if on)
        if rest:
            ax.scatter(*zip(*rest), s=14, alpha=0.5, color="C0", label="evaluations")
        if top:  # a line where the front is a trade-off of this cost; elsewhere its members only
            style = "o-" if cost in {o.name for o in objectives} else "o"
            ax.plot(
                *zip(*top),
                style,
                color="C3",
                ms=5,
                label=f"front of {', '.join(o.name for o in objectives)} ({len(top)})",
            )
        if cost in bounded:
            ax.axvline(bounded[cost], color="grey", ls="--", lw=1, label=f"bound {bounded[cost]:g}")
        ax.set(xlabel=COST_LABELS[cost], ylabel="fitness (val mIoU)", title=f"accuracy against {cost}")
        if cost in ("params", "flops"):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return _save(fig, path)


def hypervolume_curve(
    times: Sequence[float], volumes: Sequence[float], objectives: Sequence[Objective], path: Path
) -> Path:
    """Multi-objective search: the hypervolume of the front over time."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    t0 = min(times) if times else 0.0
    ax.step([(t - t0) / 60 for t in times], volumes, where="post", color="C3")
    ax.set(
        xlabel="minutes since the first result",
        ylabel="hypervolume",
        title="hypervolume of " + ", ".join(map(str, objectives)),
    )
    fig.text(
        0.01,
        0.01,
        f"each objective scaled to [0, 1] by the range of the first {HYPERVOLUME_BASIS} successful evaluations, "
        "reference point 1.1: TensorBoard's front/hypervolume",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)
