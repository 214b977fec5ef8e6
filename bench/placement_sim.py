"""Replay a GPU cluster trace through ``provider.scheduling`` and measure GPU allocation.

The protocol is the openb workload-inflation experiment of the FGD study (Weng et al.,
"Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient
Descent", USENIX ATC 2023):

* the cluster is the node list (CPU, memory, GPU count and model per node);
* for each seed, the workload's tasks are put in a random order, then random tasks are
  cloned (or, for a workload larger than the target, random tasks removed) until the
  GPU demand that arrives is ``--inflation`` times the cluster's GPU capacity (1.3);
* tasks arrive one by one and never leave; each is placed by the policy under test or fails;
* after each arrival we record arrived and allocated GPU milli; the *allocation ratio at X%*
  is the mean allocated share of GPU capacity over the arrivals at which arrived demand,
  rounded to a whole percent, is X% of capacity;
* fragmentation-aware policies get the task mix of the original workload: its most popular
  task shapes covering 95% of the tasks.

Every decision goes through :func:`provider.scheduling.place` and the accounting of
:func:`provider.scheduling.apply`, the same code the operator runs: production folds each
host's claims (GPUs, CPU and memory) through ``apply`` when it reads the pool
(:func:`provider.reservations.rules.allocation`).

Data: the Alibaba cluster-trace-GPU "openb" node and pod lists (Apache-2.0), as published
with the FGD study's simulator, github.com/hkust-adsl/kubernetes-scheduler-simulator, whose
``published_fgd_allocation.csv`` holds the study's per-seed results used here as the anchor.
By default the trace is read from ``../shared/traces/openb`` next to the repository; set
``--trace-dir`` or ``PLACEMENT_TRACE_DIR`` to read it elsewhere. Any node/pod CSVs with the
same columns work (``--nodes``/``--pods``).

    python bench/placement_sim.py --workload default --policy fragmentation,ours --seeds 42-51
    python bench/placement_sim.py --matrix --json placement_matrix.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider.errors import NoFit  # noqa: E402
from provider.scheduling import (  # noqa: E402
    GpuState,
    NodeState,
    PlacementContext,
    PlacementMemo,
    PlacementRequest,
    TaskMix,
    apply,
    get_policy,
    place,
)

log = logging.getLogger("placement_sim")

REPO = Path(__file__).resolve().parents[1]
TRACE_ENV = "PLACEMENT_TRACE_DIR"
NODES_FILE = "openb_node_list_gpu_node.csv"
PUBLISHED_FILE = "published_fgd_allocation.csv"
WORKLOADS = ("default", "gpushare40", "multigpu50", "cpu100")
POLICIES = ("random", "best_fit", "fragmentation", "least_loaded", "fragmentation_balanced")
CHECKPOINTS = (100, 110, 120, 130)
PUBLISHED_NAMES = {"random": "01-Random", "best_fit": "05-BestFit", "fragmentation": "06-FGD"}
ANCHOR = "06-FGD"  # policies without a published counterpart are compared with FGD


def default_trace_dir() -> Path:
    return Path(os.environ.get(TRACE_ENV) or REPO.parent / "shared" / "traces" / "openb")


def pods_file(trace_dir: Path, workload: str) -> Path:
    path = Path(workload)
    return path if path.suffix == ".csv" else trace_dir / f"openb_pod_list_{workload}.csv"


def load_nodes(path: Path) -> list[NodeState]:
    """Nodes from ``sn,cpu_milli,memory_mib,gpu,model``."""
    with path.open(newline="") as f:
        return [
            NodeState(
                name=row["sn"],
                cpu_milli=int(row["cpu_milli"]),
                memory_mb=int(row["memory_mib"]),
                gpus=tuple(GpuState(index=i, model=row["model"]) for i in range(int(row["gpu"]))),
            )
            for row in csv.DictReader(f)
        ]


def load_pods(path: Path) -> list[tuple[str, PlacementRequest]]:
    """Tasks from ``name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]``, by name."""
    pods = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            gpus = int(row["num_gpu"])
            milli = int(row["gpu_milli"] or 0)
            pods.append((row["name"], PlacementRequest(
                gpus=gpus,
                gpu_milli=milli if gpus == 1 and 0 < milli < 1000 else 1000,
                cpu_milli=int(row["cpu_milli"]),
                memory_mb=int(row["memory_mib"]),
                gpu_model=(row.get("gpu_spec") or None) if gpus else None,
            )))
    return sorted(pods, key=lambda p: p[0])


def arrivals(
    pods: Sequence[PlacementRequest], capacity_milli: int, inflation: float, rng: random.Random
) -> list[PlacementRequest]:
    """The seed's arrival sequence: shuffled, then inflated (or thinned) to the target."""
    order = list(pods)
    rng.shuffle(order)
    target = inflation * capacity_milli
    demand = sum(p.gpu_milli_total for p in order)
    while demand > target and order:
        demand -= order.pop(rng.randrange(len(order))).gpu_milli_total
    while True:
        clone = pods[rng.randrange(len(pods))]
        if demand + clone.gpu_milli_total > target:
            return order
        order.append(clone)
        demand += clone.gpu_milli_total


def shuffle_names(nodes: Sequence[NodeState], rng: random.Random) -> list[NodeState]:
    """Prefix node names with a random rank, so name-ordered tie-breaks differ per seed."""
    ranks = rng.sample(range(len(nodes)), len(nodes))
    width = len(str(len(nodes)))
    return [NodeState(
        name=f"{r:0{width}d}-{n.name}", cpu_milli=n.cpu_milli, memory_mb=n.memory_mb, gpus=n.gpus,
    ) for r, n in zip(ranks, nodes)]


@dataclass(frozen=True, slots=True)
class Job:
    nodes: Path
    pods: Path
    policy: str
    seed: int
    inflation: float


def run(job: Job) -> dict[str, Any]:
    """One policy, one seed: the allocation curve and the checkpoints."""
    started = time.perf_counter()
    nodes = load_nodes(job.nodes)
    pods = [r for _, r in load_pods(job.pods)]
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    rng = random.Random(job.seed)
    sequence = arrivals(pods, capacity, job.inflation, rng)
    nodes = shuffle_names(nodes, rng)
    index = {n.name: i for i, n in enumerate(nodes)}
    policy = get_policy(job.policy)
    context = PlacementContext(task_mix=TaskMix.from_requests(pods), rng=random.Random(job.seed))
    memo = PlacementMemo(policy, context)
    arrived = used = failed = 0
    by_percent: dict[int, list[float]] = {}
    for request in sequence:
        arrived += request.gpu_milli_total
        try:
            chosen = place(request, nodes, policy, context, memo)
        except NoFit:
            failed += 1
        else:
            i = index[chosen.node]
            nodes[i] = apply(nodes[i], request, chosen.gpu_indices)
            used += request.gpu_milli_total
        by_percent.setdefault(round(100 * arrived / capacity), []).append(100 * used / capacity)
    curve = {pct: statistics.fmean(v) for pct, v in sorted(by_percent.items())}
    return {
        "seed": job.seed,
        "alloc_at": {str(x): _at(curve, x) for x in CHECKPOINTS},
        "curve": [[pct, round(v, 3)] for pct, v in curve.items()],
        "tasks": len(sequence),
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _at(curve: dict[int, float], pct: int) -> float | None:
    if pct in curve:
        return round(curve[pct], 3)
    near = [v for p, v in curve.items() if abs(p - pct) <= 1]
    return round(statistics.fmean(near), 3) if near else None


def summarise(workload: str, policy: str, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(pct: int) -> dict[str, float | None]:
        values = [s["alloc_at"][str(pct)] for s in seeds if s["alloc_at"][str(pct)] is not None]
        if not values:
            return {"mean": None, "sd": None}
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": round(statistics.fmean(values), 3), "sd": round(sd, 3)}

    return {
        "workload": workload,
        "policy": policy,
        "seeds": [s["seed"] for s in seeds],
        "alloc_at_100": stat(100),
        "alloc_at_130": stat(130),
        "per_seed": seeds,
        "seconds": round(sum(s["seconds"] for s in seeds), 2),
    }


def published(trace_dir: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Mean published allocation per (workload, policy) at each checkpoint."""
    path = trace_dir / PUBLISHED_FILE
    if not path.exists():
        return {}
    rows: dict[tuple[str, str], list[dict[str, str]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault((row["workload"], row["sc_policy"]), []).append(row)
    return {
        key: {str(x): statistics.fmean(float(r[str(x)]) for r in group) for x in CHECKPOINTS}
        for key, group in rows.items()
    }


def workload_name(pods: Path) -> str:
    return pods.stem


def table(results: list[dict[str, Any]], anchors: dict[tuple[str, str], dict[str, float]]) -> str:
    head = (f"{'workload':<26} {'policy':<22} {'alloc@100':>15} {'alloc@130':>15} "
            f"{'published@130':>22} {'ratio':>6} {'s/seed':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        ref = PUBLISHED_NAMES.get(r["policy"], ANCHOR)
        anchor = anchors.get((r["workload"], ref), {}).get("130")
        m100, m130 = r["alloc_at_100"], r["alloc_at_130"]
        got = m130["mean"]
        pub = f"{anchor:6.2f} ({ref})" if anchor is not None else "n/a"
        ratio = f"{got / anchor:6.3f}" if anchor and got is not None else "   n/a"
        lines.append(
            f"{r['workload']:<26} {r['policy']:<22} {_pm(m100):>15} {_pm(m130):>15} "
            f"{pub:>22} {ratio:>6} {r['seconds'] / max(1, len(r['seeds'])):7.1f}"
        )
    return "\n".join(lines)


def _pm(s: dict[str, float | None]) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:6.2f} ± {s['sd'] or 0:4.2f}"


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def jobs_for(args: argparse.Namespace) -> Iterator[tuple[str, str, Job]]:
    trace_dir = Path(args.trace_dir)
    nodes = Path(args.nodes) if args.nodes else trace_dir / NODES_FILE
    if args.matrix:
        workloads = [pods_file(trace_dir, w) for w in WORKLOADS]
        policies = list(POLICIES)
    else:
        workloads = [Path(args.pods) if args.pods else pods_file(trace_dir, args.workload)]
        policies = args.policy.split(",")
    for pods in workloads:
        for policy in policies:
            for seed in parse_seeds(args.seeds):
                yield workload_name(pods), policy, Job(nodes, pods, policy, seed, args.inflation)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", help="node CSV (default: the openb node list)")
    parser.add_argument("--pods", help="pod CSV (overrides --workload)")
    parser.add_argument("--workload", default="default",
                        help=f"openb workload name ({', '.join(WORKLOADS)}) or a pod CSV path")
    parser.add_argument("--policy", default="fragmentation", help="policy name(s), comma-separated")
    parser.add_argument("--seeds", default="42-51", help="e.g. 42-51 or 42,45")
    parser.add_argument("--inflation", type=float, default=1.3)
    parser.add_argument("--matrix", action="store_true",
                        help=f"all of {', '.join(WORKLOADS)} x {', '.join(POLICIES)}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trace-dir", default=str(default_trace_dir()))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    planned = list(jobs_for(args))
    started = time.perf_counter()
    if args.workers > 1 and len(planned) > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            outcomes = list(pool.map(run, [job for _, _, job in planned]))
    else:
        outcomes = [run(job) for _, _, job in planned]
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (workload, policy, _), outcome in zip(planned, outcomes):
        grouped.setdefault((workload, policy), []).append(outcome)
    results = [summarise(w, p, seeds) for (w, p), seeds in grouped.items()]
    print(table(results, published(Path(args.trace_dir))))
    log.info("%d runs in %.1f s wall", len(planned), time.perf_counter() - started)
    if args.json:
        Path(args.json).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
