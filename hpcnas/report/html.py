"""``report/index.html``: one self-contained page of the report (no network, no CDN: the figures sit beside it).

The summary table of every run, every figure with a caption saying what it
shows and on which split, the decoded cells, and for a discrete search its
status counts and its sortable history.  A small inline script sorts the
tables and marks on ``<body>`` how many images failed to load, which the
browser test reads.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Dict, List, Sequence

from hpcnas.execution.history import FinishedSearch
from hpcnas.rundir import atomic_write_text

INDEX = "index.html"

# figure file name pattern -> what it shows (and on which split)
CAPTIONS = [
    (r"^curves\.png$", "Training loss and validation mIoU per epoch, one line per run (validation split)."),
    (r"^entropy\.png$", "Entropy of theta per cell type, divided by ln|O| (1: uniform, 0: one op), per search epoch."),
    (
        r"^precision_recall\.png$",
        "Object precision and recall against the IoU threshold of a match, on the test split's full images.",
    ),
    (r"^predictions_(.+)\.png$", "{0}: image, ground truth and prediction of the same test tiles (test split)."),
    (
        r"^evolution_(.+)\.png$",
        "{0}: fitness (proxy validation mIoU) of every evaluation over time, and counts by status.",
    ),
    (
        r"^accuracy_costs_(.+)\.png$",
        "{0}: proxy validation mIoU against each measured cost; the Pareto front of the search's objectives in red.",
    ),
    (
        r"^hypervolume_(.+)\.png$",
        "{0}: hypervolume of the Pareto front after each finished evaluation, on one fixed scale (the range of "
        "the first successful evaluations, reference point 1.1), the same number TensorBoard charts.",
    ),
    (r"^cell_(.+)_(\w+)\.png$", "{0}: the decoded {1} cell (ops on the edges)."),
    (r"^network_(.+)\.png$", "{0}: the UNet++ network, kept paths highlighted."),
]

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; cursor: pointer; }
figure { display: inline-block; margin: 1em; max-width: 46%; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
code { font-size: 0.85em; }
"""

SCRIPT = """
function sortTable(th) {
  const table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  const asc = th.dataset.order !== "asc";
  th.dataset.order = asc ? "asc" : "desc";
  const key = row => { const t = row.cells[col].textContent.replace(/,/g, ""); const n = parseFloat(t);
                       return isNaN(n) ? t : n; };
  Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.brokenImages = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.querySelectorAll("table.sortable th").forEach(th => th.addEventListener("click", () => sortTable(th)));
  document.body.dataset.ready = "yes";
});
"""


def caption(name: str) -> str:
    """What a figure of the report shows, from its file name."""
    for pattern, text in CAPTIONS:
        match = re.match(pattern, name)
        if match:
            return text.format(*match.groups())
    return name


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], css: str = "sortable", row_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{row_id}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_index(
    out: Path,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    figures: Sequence[str],
    cells: Dict[str, str],
    searches: Dict[str, FinishedSearch],
    notes: Sequence[str],
) -> Path:
    """Write ``out/index.html`` beside the figures; returns its path."""
    parts: List[str] = [f"<h1>hpcnas report</h1><h2>Runs</h2>{_table(header, rows, row_id='run')}"]
    if cells:
        parts.append(
            "<h2>Architectures</h2><ul>"
            + "".join(
                f"<li><b>{html.escape(label)}</b>: <code>{html.escape(text)}</code></li>"
                for label, text in cells.items()
            )
            + "</ul>"
        )
    for label, search in searches.items():
        names = [o.name for o in search.objectives]
        evaluations = search.evaluations
        front = {e.id for e in search.front}
        counts: Dict[str, int] = {}
        for e in evaluations:
            counts[str(e.status)] = counts.get(str(e.status), 0) + 1
        history = [
            [
                e.id,
                str(e.status),
                "yes" if e.id in front else "",
                *[f"{e.objectives[n]:.6g}" if n in e.objectives else "-" for n in names],
                e.rank if e.rank is not None else "-",
                e.batch_size or "-",
                f"{(e.end - e.start):.1f}" if e.end and e.start else "-",
                e.parent if e.parent is not None else "-",
            ]
            for e in evaluations
        ]
        parts.append(
            f"<h2>Discrete search {html.escape(label)}</h2><p>"
            + ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items()))
            + f" of {len(evaluations)} evaluations; {len(front)} on the front of "
            + html.escape(", ".join(map(str, search.objectives)))
            + f". {html.escape(search.spending())}. Click a column to sort.</p>"
            + _table(["id", "status", "front", *names, "rank", "batch", "seconds", "parent"], history)
        )
    if figures:
        parts.append(
            "<h2>Figures</h2>"
            + "".join(
                f'<figure><a href="{html.escape(name)}" title="open at full size">'
                f'<img src="{html.escape(name)}" alt="{html.escape(name)}"></a>'
                f"<figcaption>{html.escape(caption(name))} (click for full size)</figcaption></figure>"
                for name in figures
            )
        )
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>hpcnas report</title>'
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>{''.join(parts)}</body></html>\n"
    )
    path = Path(out) / INDEX
    atomic_write_text(path, page)
    return path
