"""Each team's share of the pool's GPUs over time, one panel per queue strategy.

Replays one seed of ``bench/queue_sim.py``'s workload (the default: seed 1 of the default
workload) through each strategy and draws, from the allocation the replay notes at evenly
spaced instants of the arrival window (:class:`bench.queue_sim.Sample`), each team's share of
the GPUs (solid) against its fair share at that instant (dashed, same colour: the max-min fair
split of the pool by the teams' demands, what Jain's index in the replay's table is measured
against) and the quota of each team (dotted, a quarter). Where a solid line runs below its
dashed one, that team is served less than its fair share.

    python bench/plot_queue_shares.py                      # writes docs/queue_shares.png
    python bench/plot_queue_shares.py --seed 2 --out /tmp/shares.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted on a build host
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.jct_sim import DEFAULT_POLICY  # noqa: E402
from bench.queue_sim import (  # noqa: E402
    LOAD, POOL_SHARE, STRATEGIES, TEAMS, Inputs, figures, prepare, replay, workload)
from placement_sim import NODES_FILE, default_trace_dir  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "queue_shares.png"
TITLES = {"fcfs": "first come, first served (today)", "strict": "strict quotas, no borrowing",
          "kueue": "borrowing, arrival order (Kueue)", "ours": "borrowing, fair-share order (ours)"}


def timeline(inputs: Inputs, strategy: str, policy: str, seed: int) -> dict[str, Any]:
    """One strategy's replay of ``seed``: the sample instants, each team's share of the GPUs and
    fair share at each, and the replay's utilisation and Jain's index for the panel's title."""
    pool, pods, _ = prepare(inputs)
    tasks = workload(pods, sum(len(n.gpus) for n in pool), inputs.load, seed)
    run = replay(tasks, pool, strategy, policy, seed)
    samples, capacity = run["meter"].samples, run["meter"].capacity
    shown = figures(tasks, run)
    return {"hours": [s.at / 3600 for s in samples],
            "share": {team: [s.allocated[k] / capacity for s in samples] for k, team in enumerate(TEAMS)},
            "fair": {team: [s.fair[k] / capacity for s in samples] for k, team in enumerate(TEAMS)},
            "utilisation": shown["utilisation"], "jain": shown["jain"]}


def draw(lines: dict[str, dict[str, Any]], seed: int, out: Path) -> None:
    """The panels, one per strategy in :data:`STRATEGIES` order, written to ``out``."""
    figure, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True, sharey=True)
    palette = plt.get_cmap("tab10")
    colours = {team: palette(k) for k, team in enumerate(TEAMS)}
    for ax, strategy in zip(axes.flat, STRATEGIES):
        line = lines[strategy]
        for team in TEAMS:
            ax.plot(line["hours"], line["share"][team], color=colours[team], lw=1.3,
                    label=f"{team} ({TEAMS[team]:.0%} of tasks)")
            ax.plot(line["hours"], line["fair"][team], color=colours[team], lw=1.0, ls="--")
        ax.axhline(1 / len(TEAMS), color="grey", lw=0.8, ls=":")
        ax.set_title(f"{TITLES[strategy]}: GPU utilisation {line['utilisation']:.2f}, Jain {line['jain']:.2f}",
                     fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("hours into the arrival window")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of the pool's GPUs")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += [Line2D([], [], color="black", ls="--", lw=1.0), Line2D([], [], color="grey", ls=":", lw=0.8)]
    labels += ["fair share (dashed)", "quota (a quarter)"]
    figure.legend(handles, labels, loc="lower center", ncol=6, fontsize=9, frameon=False)
    figure.suptitle(f"Each team's GPUs over the arrival window, openb default workload, seed {seed}", fontsize=11)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace-dir", default=str(default_trace_dir()))
    parser.add_argument("--seed", type=int, default=1, help="seed of the teams and arrivals (default 1)")
    parser.add_argument("--pool-share", type=float, default=POOL_SHARE)
    parser.add_argument("--load", type=float, default=LOAD)
    parser.add_argument("--policy", default=DEFAULT_POLICY)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write (default docs/queue_shares.png)")
    args = parser.parse_args(argv)
    trace = Path(args.trace_dir)
    inputs = Inputs(trace / NODES_FILE, trace / "openb_pod_list_default.csv", args.pool_share, False, args.load)
    prepare(inputs)  # once here, inherited by the workers
    with ProcessPoolExecutor(args.workers) as workers:
        futures = {s: workers.submit(timeline, inputs, s, args.policy, args.seed) for s in STRATEGIES}
        lines = {s: f.result() for s, f in futures.items()}
    draw(lines, args.seed, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
