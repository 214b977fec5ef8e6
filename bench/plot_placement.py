"""Plot GPU allocation ratio against arrived workload, one panel per workload.

Reads the JSON that ``bench/placement_sim.py --json`` writes (one result or a list) and draws,
for every policy, the mean over seeds of the allocated share of GPU capacity at each arrived
percentage; dashed lines mark the published FGD figure at 130% where it is known.

    python bench/plot_placement.py placement_matrix.json --out docs/placement_alloc.png
    python bench/plot_placement.py two_policies.json --xmin 100 --ylim 92,98 --out close_up.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from placement_sim import ANCHOR, default_trace_dir, published  # noqa: E402


def mean_curve(result: dict[str, Any], xmin: int = 50) -> tuple[list[int], list[float]]:
    by_percent: dict[int, list[float]] = defaultdict(list)
    for run in result["per_seed"]:
        for pct, alloc in run["curve"]:
            by_percent[int(pct)].append(float(alloc))
    xs = sorted(p for p in by_percent if p >= xmin)
    return xs, [statistics.fmean(by_percent[p]) for p in xs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="JSON written by placement_sim.py --json")
    parser.add_argument("--out", default="docs/placement_alloc.png")
    parser.add_argument("--trace-dir", default=str(default_trace_dir()))
    parser.add_argument("--xmin", type=int, default=50, help="first arrived percentage drawn")
    parser.add_argument("--ylim", default="50,100", help="allocation range drawn, LOW,HIGH")
    args = parser.parse_args(argv)
    low, high = (float(v) for v in args.ylim.split(","))
    data = json.loads(Path(args.results).read_text())
    results = data if isinstance(data, list) else [data]
    anchors = published(Path(args.trace_dir))
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    cols = min(2, len(workloads))
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    for ax, workload in zip(axes.flat, workloads):
        for r in (r for r in results if r["workload"] == workload):
            xs, ys = mean_curve(r, args.xmin)
            ax.plot(xs, ys, label=f"{r['policy']} ({r['alloc_at_130']['mean']:.2f}% at 130%)")
        fgd = anchors.get((workload, ANCHOR), {}).get("130")
        if fgd is not None:
            ax.axhline(fgd, color="grey", linestyle="--", linewidth=0.8, label=f"published FGD at 130%: {fgd:.2f}%")
        ax.set_title(workload)
        ax.set_xlabel("arrived GPU demand (% of cluster GPU capacity)")
        ax.set_ylabel("GPU allocation ratio (%)")
        ax.set_ylim(low, high)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(workloads):]:
        ax.set_visible(False)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
