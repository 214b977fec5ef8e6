"""Plot the job-completion-time sweep of ``bench/jct_sim.py``: each policy's mean JCT over
round-robin's, with its 95% interval, against load and against the measurements' lag.

Reads the JSON that ``bench/jct_sim.py --json`` writes and draws one row per kind of job: on the
left the ratio against load (at 1 s lag), on the right against lag (at 80% load), one line per
policy and pool size. Below the dotted line at 1.0 a policy beats round-robin.

    python bench/jct_sim.py --json jct.json && python bench/plot_jct.py jct.json --out docs/jct_sweep.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHOWN = ("least_loaded", "least_loaded:stale", "oracle", "random")
"""The policies drawn: the default, it reading the measurement alone, the bound, the baseline."""
STYLE = {"least_loaded": "C0", "least_loaded:stale": "C1", "oracle": "C2", "random": "C7"}


def series(results: Sequence[dict[str, Any]], jobs: str, axis: str, fixed: dict[str, Any]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The results of one kind of job along ``axis`` with the other conditions at ``fixed``, per
    (policy, pool size) of uniform hosts, in the order of ``axis``."""
    lines: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["jobs"] == jobs and not r["mixed"] and r["policy"] in SHOWN and all(r[k] == v for k, v in fixed.items()):
            lines[r["policy"], r["hosts"]].append(r)
    return {key: sorted(rows, key=lambda r: r[axis]) for key, rows in lines.items() if len(rows) > 1}


def plot(results: Sequence[dict[str, Any]], out: Path) -> None:
    kinds = sorted({r["jobs"] for r in results}, reverse=True)
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12.5, 3.6 * len(kinds)), squeeze=False, sharey="row")
    for row, jobs in zip(axes, kinds):
        for ax, axis, fixed, label in ((row[0], "load", {"lag_s": 1.0}, "load (1 s lag)"),
                                       (row[1], "lag_s", {"load": 0.8}, "lag of the measurements, s (80% load)")):
            for (policy, hosts), rows in sorted(series(results, jobs, axis, fixed).items()):
                xs = [r[axis] for r in rows]
                ax.plot(xs, [r["mean_jct_ratio_rr"] for r in rows], marker="o", color=STYLE[policy],
                        linestyle="-" if hosts <= 3 else "--", label=f"{policy}, {hosts} hosts")
                ax.fill_between(xs, [r["ci95_low"] for r in rows], [r["ci95_high"] for r in rows],
                                color=STYLE[policy], alpha=0.15)
            ax.axhline(1.0, color="k", linestyle=":", linewidth=1)
            ax.set_xlabel(label)
            ax.set_title(f"{jobs} jobs")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("mean JCT / round-robin's")
        row[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="what bench/jct_sim.py --json wrote")
    parser.add_argument("--out", type=Path, default=Path("jct_sweep.png"))
    args = parser.parse_args(argv)
    plot(json.loads(args.json.read_text())["results"], args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
