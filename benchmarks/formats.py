"""Compute formats of the search step: fp32, bf16 autocast, channels_last, both; images per second of each.

Runs the real ``hpcnas search`` on one rank, on generated data, once per
format and repeat (formats alternate, so drift hits them alike), and reads
the training time of every epoch but the first (warm-up) from metrics.jsonl.
Reports the median images per second of each format and its speed-up over
fp32.  The formats are ``search.precision`` (bf16: the weight step's forward
under bfloat16 autocast, the architecture step in fp32) and
``search.channels_last`` (GPUs only: on a CPU oneDNN's NHWC backward of a
strided 1x1 convolution with few channels corrupts memory, which this
benchmark found).

    python benchmarks/formats.py [--device cpu|cuda] [--size 64] [--batch 4] [--channels 8] [--repeats 3]
        [--threads-per-rank 1] [--json out.json]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from _emit import emit, tuning  # benchmarks/_emit.py, beside this script
from data_parallel import build_parser, run_one

FORMATS = {
    "fp32": [],
    "bf16": ["search.precision=bf16"],
    "channels_last": ["search.channels_last=true"],
    "bf16+channels_last": ["search.precision=bf16", "search.channels_last=true"],
}


def main(argv=None) -> int:
    p = build_parser(__doc__)
    p.add_argument(
        "--formats",
        default=None,
        help=f"comma-separated, of {', '.join(FORMATS)} (default: all on cuda; fp32,bf16 on cpu, where hpcnas "
        "refuses channels_last)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs of each format, alternating (median taken)")
    args = p.parse_args(argv)
    chosen = args.formats or (",".join(FORMATS) if args.device.startswith("cuda") else "fp32,bf16")
    names = [f.strip() for f in chosen.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        p.error(f"unknown format(s) {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    speeds = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in names:
                args.set = FORMATS[name]
                row = run_one(1, args, Path(tmp) / f"{name}-{repeat}")
                speeds[name].append(row["images_per_s"])
    base = statistics.median(speeds[names[0]])
    rows = [
        {
            "format": name,
            "device": args.device,
            "input": args.size,
            "batch": args.batch,
            "channels": args.channels,
            "images_per_s": statistics.median(v),
            "runs": v,
            "speedup_vs_" + names[0]: statistics.median(v) / base,
        }
        for name, v in speeds.items()
    ]
    print(f"{'format':>20}{'device':>8}{'images/s':>10}{'speed-up':>10}   runs")
    for r in rows:
        runs = " ".join(f"{v:.2f}" for v in r["runs"])
        print(
            f"{r['format']:>20}{r['device']:>8}{r['images_per_s']:>10.2f}{r['speedup_vs_' + names[0]]:>10.2f}   {runs}"
        )
    emit({"benchmark": "formats", "environment": tuning(), "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
