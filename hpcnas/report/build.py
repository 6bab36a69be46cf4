"""Assemble a report: read each run's records, draw what exists, write summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from hpcnas.errors import UserError
from hpcnas.execution.history import read_search
from hpcnas.report import graphs, html, plots
from hpcnas.rundir import SUMMARY, RunDir, atomic_write_text, read_jsonl
from hpcnas.search.diagnosis import unmoved_theta
from hpcnas.space.genotype import Genotype
from hpcnas.strategies.objectives import hypervolume_over_time


def _examples(npz: Path) -> List[Dict[str, np.ndarray]]:
    with np.load(npz) as data:
        names = list(data["names"])
        return [
            {"name": n, "image": data[f"image_{i}"], "truth": data[f"truth_{i}"], "pred": data[f"pred_{i}"]}
            for i, n in enumerate(names)
        ]


def _value(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"


def _label(run: Path, taken: set) -> str:
    label = run.name or str(run)
    while label in taken:
        label = f"{run.parent.name}/{label}"
    taken.add(label)
    return label


def build_report(runs: Sequence[Path], out: Optional[Path] = None) -> Path:
    """Draw every figure the runs' files allow into ``out`` (default ``runs[0]/report``)."""
    out = Path(out) if out else RunDir(runs[0]).report
    out.mkdir(parents=True, exist_ok=True)
    taken: set = set()
    labels = {run: _label(run, taken) for run in runs}
    metrics = {labels[r]: read_jsonl(RunDir(r).metrics) for r in runs if read_jsonl(RunDir(r).metrics)}
    evaluations = {
        labels[r]: json.loads(RunDir(r).evaluation.read_text()) for r in runs if RunDir(r).evaluation.exists()
    }
    figures: List[str] = []
    notes: List[str] = []

    train_like = {k: v for k, v in metrics.items() if "train_loss" in v[0]}
    if train_like:
        figures.append(plots.training_curves(train_like, out / "curves.png").name)
    searched = {k: v for k, v in metrics.items() if "entropy_normalized" in v[0]}
    if searched:
        figures.append(plots.entropy_curves(searched, out / "entropy.png").name)
    notes += [f"{label}: {problem}" for label, recs in searched.items() if (problem := unmoved_theta(recs))]
    if evaluations:
        figures.append(plots.precision_recall(evaluations, out / "precision_recall.png").name)
    for run in runs:  # every run's examples: the same tiles, compared run by run
        if RunDir(run).predictions.exists():
            figures.append(
                plots.prediction_examples(
                    _examples(RunDir(run).predictions), out / f"predictions_{labels[run].replace('/', '_')}.png"
                ).name
            )
    searches = {labels[r]: s for r in runs if (s := read_search(r)) is not None}
    for label, search in searches.items():
        stem = label.replace("/", "_")
        history = [e.to_dict() for e in search.evaluations]
        figures.append(plots.evolution_history(history, out / f"evolution_{stem}.png").name)
        front = search.front
        figures.append(
            plots.accuracy_against_costs(
                search.evaluations, search.objectives, front, out / f"accuracy_costs_{stem}.png"
            ).name
        )
        if len(search.objectives) > 1:
            times, volumes = hypervolume_over_time(search.objectives, search.evaluations)
            figures.append(
                plots.hypervolume_curve(times, volumes, search.objectives, out / f"hypervolume_{stem}.png").name
            )

    genotypes = {labels[r]: Genotype.load(str(RunDir(r).genotype)) for r in runs if RunDir(r).genotype.exists()}
    drawn = set()
    for label, g in genotypes.items():
        if not graphs.have_dot():
            notes.append(
                "graphviz (the `dot` program or its Python package) is missing: cells and networks were not drawn "
                "(envs/setup.sh installs both)."
            )
            break
        if g in drawn:
            continue
        drawn.add(g)
        stem = label.replace("/", "_")
        for role, _ in g.cells:
            made = graphs.draw_cell(g, role, out / f"cell_{stem}_{role}.png")
            if made:
                figures.append(made.name)
        if g.paths:
            made = graphs.draw_unetpp(g, out / f"network_{stem}.png")
            if made:
                figures.append(made.name)

    header = [
        "run",
        "state",
        "epochs",
        "best val mIoU",
        "test mIoU",
        "test IoU per class",
        "object P@0.5",
        "object R@0.5",
        "parameters",
        "GFLOPs/tile",
        "wall time",
        "GPU-hours",
    ]
    rows = [
        _summary_row(
            run, labels[run], metrics.get(labels[run], []), evaluations.get(labels[run]), searches.get(labels[run])
        )
        for run in runs
    ]
    lines = ["# hpcnas report", "", "| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if genotypes:
        lines += ["", "## Architectures", ""]
        lines += [f"- **{label}**: `{g.describe()}`" for label, g in genotypes.items()]
    for label, search in searches.items():
        names = [o.name for o in search.objectives]
        lines += [
            "",
            f"## Pareto front of {label}: " + ", ".join(map(str, search.objectives)),
            "",
            f"{len(search.front)} of {len(search.evaluations)} evaluations "
            f"(`hpcnas pareto {search.run_dir} --export DIR` writes their genotypes). {search.spending()}.",
            "",
            "| evaluation | " + " | ".join(names) + " | genotype |",
            "| --- " * (len(names) + 2) + "|",
        ]
        for e in search.front:
            values = [_value(e.objectives.get(n)) for n in names]
            described = e.genotype.describe().replace("|", "\\|")  # a bar would end the cell
            lines.append(f"| {e.id} | " + " | ".join(values) + f" | `{described}` |")
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic_write_text(out / SUMMARY, "\n".join(lines) + "\n")
    html.write_index(
        out, header, rows, figures, {label: g.describe() for label, g in genotypes.items()}, searches, notes
    )
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def _state(run: Path) -> str:
    """How the run stands (``hpcnas status``'s state): an interrupted run's row says so instead of dashes alone."""
    from hpcnas.report.status import run_status

    try:
        return str(run_status(str(run))["state"])
    except UserError:
        return "-"


def _summary_row(run: Path, label: str, recs: List[dict], ev: Optional[dict], search) -> List[str]:
    """One run's line of the summary table (markdown and HTML)."""
    vals = [r["val_miou"] for r in recs if r.get("val_miou") is not None]
    model = json.loads(RunDir(run).model.read_text()) if RunDir(run).model.exists() else {}
    per_class = (
        ", ".join(f"{k[4:]} {v:.3f}" for k, v in ev.items() if k.startswith("iou_") and v is not None) if ev else ""
    )
    wall, gpu_hours = None, "-"
    if recs:
        wall = sum(r.get("time_s", 0.0) for r in recs)
        if str(recs[-1].get("device", "")).startswith("cuda"):  # every rank holds a GPU for the whole run
            gpu_hours = f"{wall * recs[-1].get('ranks', 1) / 3600:.2f}"
    elif search is not None and search.evaluations:
        ends = [e.end for e in search.evaluations if e.end]
        starts = [e.submit or e.start for e in search.evaluations if e.submit or e.start]
        wall = max(ends) - min(starts) if ends and starts else None
    return [
        label,
        _state(run),
        str(len(recs)) if recs else "-",
        f"{max(vals):.4f}" if vals else "-",
        f"{ev['miou']:.4f}" if ev else "-",
        per_class or "-",
        f"{ev['objects']['precision'][4]:.3f}" if ev else "-",
        f"{ev['objects']['recall'][4]:.3f}" if ev else "-",
        f"{model['params']:,}" if "params" in model else "-",
        f"{model['flops'] / 1e9:.3g}" if "flops" in model else "-",
        _hours(wall) if wall else "-",
        gpu_hours,
    ]


def report(run_dirs: Sequence[str], out: Optional[str] = None) -> Path:
    """``hpcnas report``: pictures and a summary of one or more runs into the first one's report/."""
    for d in run_dirs:
        if not Path(d).is_dir():
            raise UserError("no such run directory", source=str(d))
        if not RunDir(d).holds_a_run():
            raise UserError(
                "holds no run (no metrics.jsonl, evaluation.json, history.jsonl or genotype.json)", source=str(d)
            )
    return build_report([Path(d) for d in run_dirs], Path(out) if out else None)
