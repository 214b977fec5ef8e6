"""How close the time-based simulator comes to the topology: the same arrivals replayed in both.

``bench/cluster.py --json PATH`` records every job of every run: its arrival offset, the hog's
phases, the lone job's container time, and what each policy's jobs took on the real topology.
This replays exactly those arrivals in :mod:`bench.jct_sim`'s model of that topology (three hosts
of the quota's cores and four GPUs, jobs of one thread whose work is the lone job's container
time at the quota, the hog where and when it ran, at twice a job's weight) with the same
policies, and prints both sides per load and policy: the mean JCT ratio to round-robin with its
95% interval over the seeds, and the mean container time, which tests the processor-sharing
model by itself. A last row per load is the model's ``oracle`` on the same arrivals: each job
placed where it would run fastest at that instant, knowing the true hog and every job's demand,
the bound for any placement made one job at a time on that topology.

Two things the model leaves out are put back as measured, the same for every policy: Airflow's
delay from submission to placement (the median of every job's submission to container start,
which with four GPUs a host is seldom a wait for room) moves each arrival later and adds to
each JCT; and the container's start, before its work shows in the
agent's samples, is the measurement lag (``--lag``, default 1 s).

    python bench/jct_calibrate.py PATH [--lag S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.jct_sim import ANCHOR, ORACLE, ci95, Host, Job, replay, Scenario, Spell  # noqa: E402


def scenario(doc: dict[str, Any], run: dict[str, Any], lag_s: float, delay_s: float) -> Scenario:
    """The topology run ``run`` as a simulator scenario, each arrival ``delay_s`` later (Airflow's
    delay, :func:`airflow_delay_s`; see the module's description)."""
    quota: dict[str, float] = doc["host_cores"]
    lone = doc["calibration"]
    cores = quota[str(lone["pool"]).removeprefix("gpu_")]
    hosts = tuple(Host(name, cores=c) for name, c in sorted(quota.items()))
    jobs = tuple(Job(j["index"], j["offset_s"] + delay_s, work=cores * lone["duration_s"], cores=1.0, reserved_milli=0)
                 for j in run["jobs"])
    spells = tuple(Spell(h, start, end) for start, end, h in run["hog"])
    return Scenario(hosts, jobs, spells, lag_s)


def airflow_delay_s(doc: dict[str, Any]) -> float:
    """Submission to placement: the median over every job of every run of submission to
    container start (the lone job alone is the first run after start-up, slower than most)."""
    return statistics.median(j["started"] - j["arrival"] for r in doc["runs"] for j in r["jobs"]
                             if j["state"] == "success")


def compare(doc: dict[str, Any], lag_s: float) -> list[dict[str, Any]]:
    """Per load and policy: the topology's and the simulator's ratio to round-robin over the
    seeds, and both mean container times."""
    delay = airflow_delay_s(doc)
    sim: dict[tuple[float, int, str], float] = {}
    top: dict[tuple[float, int, str], float] = {}
    run_top: dict[tuple[float, str], list[float]] = {}
    run_sim: dict[tuple[float, str], list[float]] = {}
    anchors: dict[tuple[float, int], dict[str, Any]] = {}
    for run in doc["runs"]:
        key = (run["load"], run["seed"], run["policy"])
        if run["policy"] == ANCHOR:
            anchors[run["load"], run["seed"]] = run
        done = [j for j in run["jobs"] if j["state"] == "success"]
        top[key] = statistics.fmean(j["finished"] - j["arrival"] for j in done)
        s = scenario(doc, run, lag_s, delay)
        jct = replay(s, run["policy"], run["seed"])
        sim[key] = statistics.fmean(jct) + delay
        run_top.setdefault(key[::2], []).extend(j["duration_s"] for j in done)
        # A job's time in the model from its start: its JCT less any wait, which the model does
        # not report apart; with four GPUs a host no job of these runs waits for room.
        run_sim.setdefault(key[::2], []).extend(jct)
    out = []
    for load in sorted({k[0] for k in top}):
        seeds = sorted({k[1] for k in top if k[0] == load and k[2] == ANCHOR})
        for policy in dict.fromkeys(k[2] for k in top if k[0] == load):
            row: dict[str, Any] = {"load": load, "policy": policy, "seeds": len(seeds)}
            for side, means in (("topology", top), ("sim", sim)):
                mean, low, high = ci95([means[load, s, policy] / means[load, s, ANCHOR] for s in seeds])
                row[side] = {"ratio": round(mean, 3), "ci95_low": round(low, 3), "ci95_high": round(high, 3)}
            row["topology"]["mean_run_s"] = round(statistics.fmean(run_top[load, policy]), 2)
            row["sim"]["mean_run_s"] = round(statistics.fmean(run_sim[load, policy]), 2)
            out.append(row)
        bound = [(statistics.fmean(replay(scenario(doc, anchors[load, s], lag_s, delay), ORACLE, s)) + delay)
                 / sim[load, s, ANCHOR] for s in seeds]
        mean, low, high = ci95(bound)
        out.append({"load": load, "policy": ORACLE, "seeds": len(seeds), "topology": None,
                    "sim": {"ratio": round(mean, 3), "ci95_low": round(low, 3), "ci95_high": round(high, 3)}})
    return out


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'load':>5} {'policy':<24} {'topology vs RR [95% CI]':>24} {'sim vs RR [95% CI]':>22} "
             f"{'sim - topology':>14} {'run (topology / sim)':>21}"]
    for r in rows:
        t, s = r["topology"], r["sim"]
        if t is None:  # the bound: the model alone
            lines.append(f"{r['load']:>5.2f} {r['policy']:<24} {'':>24} {s['ratio']:>6.3f} "
                         f"[{s['ci95_low']:.3f}-{s['ci95_high']:.3f}]")
            continue
        lines.append(f"{r['load']:>5.2f} {r['policy']:<24} {t['ratio']:>8.3f} [{t['ci95_low']:.3f}-{t['ci95_high']:.3f}]"
                     f" {s['ratio']:>6.3f} [{s['ci95_low']:.3f}-{s['ci95_high']:.3f}] {s['ratio'] - t['ratio']:>+14.3f}"
                     f" {t['mean_run_s']:>9.1f}s / {s['mean_run_s']:.1f}s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="the JSON that bench/cluster.py --json wrote")
    parser.add_argument("--lag", type=float, default=1.0, help="measurement lag in the model, seconds (default 1)")
    args = parser.parse_args(argv)
    doc = json.loads(args.path.read_text())
    print(f"Airflow's delay from submission to placement, median over the jobs: {airflow_delay_s(doc):.1f} s; "
          f"lag {args.lag:g} s.")
    print(table(compare(doc, args.lag)))
    print("(run, simulator side: each job's time from its placement to its end, any wait for room included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
