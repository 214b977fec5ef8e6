"""Preemption replayed in time: how fast a queue gets its quota back, and the work that costs.

The pool, the tasks, their arrivals and their teams are ``bench/queue_sim.py``'s (the openb
trace; four teams with a quarter of the GPUs each, borrowing what the others leave idle; an
offered GPU load of ``--load`` times the pool). Waiting tasks start in arrival order, each when
its queue admits it and a host has room (Kueue's ``BestEffortFIFO`` with borrowing). On top of
that, a task whose queue would still be within its quota with it, and that finds no room,
reclaims: :func:`provider.scheduling.preemption.choose` picks the victims, exactly enough on one
host, among tasks of borrowing queues (``reclaim: any``). The victim order is the only thing
that differs between the replays:

* ``none``: no preemption; the reclaiming task waits for borrowers to end.
* ``kueue``: Kueue's order, borrowers first, then lowest priority, then most recently admitted.
* ``ours``: borrowers first, then lowest priority, then the least work lost, then youngest.

Every task checkpoints each ``--checkpoint-interval`` seconds of its run (none before the first).
A victim loses what it ran since its last checkpoint (its whole run when it has none), waits
again from the time it was preempted, and resumes on any host with what it had left plus what
it lost. Reported per victim order: **reclaim latency**, over the tasks that found no room
although their queue was within its quota with them, from their arrival to their start (mean
and 95th percentile; 0 when preemption made room at once); **preemptions**, and of them
the victims that had not reached their first checkpoint; and **GPU-hours lost**, each
victim's GPUs times the run it lost. The goal: ours loses at most half
of Kueue's GPU-hours at equal reclaim latency.

Data: the openb node and pod lists (Alibaba cluster-trace-GPU, Apache-2.0), read from
``--trace-dir`` (default ``../shared/traces/openb``).

    python bench/preemption_sim.py                      # seeds 1-3
    python bench/preemption_sim.py --checkpoint-interval 600 --json preemption.json
    python bench/preemption_sim.py --smoke              # seconds: what the test suite runs
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.queue_sim import (  # noqa: E402
    Inputs, Task, add_workload_arguments, p95, prepare, queue_setup, workload, workload_inputs)
from provider.scheduling import NodeState, PlacementContext, apply, get_policy, release  # noqa: E402
from provider.scheduling.filters import eligible_gpus  # noqa: E402
from provider.scheduling.no_fit import NoFit  # noqa: E402
from provider.scheduling.preemption import (  # noqa: E402
    KUEUE_ORDER, LEAST_WORK_LOST, PreemptionRules, Running, VictimKey, borrowing, choose, within_quota)
from provider.scheduling.queues import Admitted, Amounts, QueueSpec, Waiting, admit  # noqa: E402
from replay_memo import PlacementMemo  # noqa: E402

ORDERS: dict[str, VictimKey | None] = {"none": None, "kueue": KUEUE_ORDER, "ours": LEAST_WORK_LOST}
CHECKPOINT_INTERVAL_S = 1800.0
"""Half an hour of run between checkpoints: what a trainer that saves every few epochs of an
ImageNet-sized job does."""
RULES = PreemptionRules(reclaim="any")


@dataclass(slots=True)
class Run:
    """A task running now: on which node and GPUs, since when (this run)."""

    node: int
    gpus: tuple[int, ...]
    started: float


def last_checkpoint(started: float, now: float, interval: float) -> float | None:
    """When a run that started at ``started`` last checkpointed by ``now``; None before its first."""
    done = math.floor((now - started) / interval)
    return None if done < 1 else started + done * interval


def replay(tasks: Sequence[Task], pool: Sequence[NodeState], order: str, policy: str, seed: int,
           interval: float) -> dict[str, Any]:
    """Run ``tasks`` on ``pool`` with the victim ``order`` of :data:`ORDERS`; the figures."""
    nodes = list(pool)
    index = {n.name: i for i, n in enumerate(nodes)}
    capacity = sum(1000 * len(n.gpus) for n in nodes)
    queues: Mapping[str, QueueSpec] = queue_setup("kueue", capacity)
    key = ORDERS[order]
    memo = PlacementMemo(get_policy(policy), PlacementContext(rng=random.Random(seed)))
    usage = {q: Amounts() for q in queues}
    amounts = [t.amounts for t in tasks]
    left = [t.duration for t in tasks]  # run still to do
    waiting: dict[int, float] = {}  # task -> since (arrival order: dicts keep insertion order)
    reclaiming: dict[int, float] = {}  # tasks that found no room within their queue's quota -> since
    running: dict[int, Run] = {}
    events: list[tuple[float, int, int, int]] = [(t.arrival, 1, t.index, 0) for t in tasks]
    heapq.heapify(events)
    generation = [0] * len(tasks)
    reclaim_waits: list[float] = []
    preemptions, before_first_checkpoint, lost_milli_s = 0, 0, 0.0

    def begin(k: int, i: int, gpus: tuple[int, ...], now: float) -> None:
        task = tasks[k]
        nodes[i] = apply(nodes[i], task.request, gpus)
        usage[task.team] = usage[task.team] + amounts[k]
        generation[k] += 1
        running[k] = Run(i, gpus, now)
        del waiting[k]
        if k in reclaiming:
            reclaim_waits.append(now - reclaiming.pop(k))
        heapq.heappush(events, (now + left[k], 0, k, generation[k]))

    def stop(k: int, now: float) -> None:
        task, run = tasks[k], running.pop(k)
        nodes[run.node] = release(nodes[run.node], task.request, run.gpus)
        usage[task.team] = usage[task.team] - amounts[k]

    seen: dict[int, Running] = {}  # each run as preemption sees it, made again at its next checkpoint

    def as_running(j: int, now: float) -> Running:
        run, known = running[j], seen.get(j)
        checkpointed = last_checkpoint(run.started, now, interval)
        if known is None or known.started != run.started or known.checkpointed != checkpointed:
            known = seen[j] = Running(str(j), tasks[j].team, 0, nodes[run.node].name, run.gpus, tasks[j].request,
                                      run.started, checkpointed)
        return known

    def preempt_for(k: int, now: float) -> bool:
        """Preempt the victims :func:`choose` picks for ``k`` and start it; False when none can.
        Under ``reclaim: any`` only tasks of queues that borrow can be victims, and taking
        victims only ends borrowing, so :func:`choose` is handed those tasks alone."""
        nonlocal preemptions, before_first_checkpoint, lost_milli_s
        if key is None:
            return False
        task = tasks[k]
        lenders = {q for q in queues if borrowing(q, usage, queues)} - {task.team}
        if not lenders:
            return False
        waiter = Waiting(str(k), task.team, 0, waiting[k], amounts[k])
        candidates = [as_running(j, now) for j in running if tasks[j].team in lenders]
        found = choose(waiter, task.request, nodes, candidates, usage, queues, RULES, now, key)
        if found is None:
            return False
        for victim in found.victims:
            j = int(victim.running.owner)
            ran, lost = now - running[j].started, victim.running.work_lost_s(now)
            left[j] = left[j] - ran + lost
            preemptions += 1
            before_first_checkpoint += victim.running.checkpointed is None
            lost_milli_s += tasks[j].request.gpu_milli_total * lost
            stop(j, now)
            waiting[j] = now
        i = index[found.host]
        begin(k, i, tuple(eligible_gpus(task.request, nodes[i])[: task.request.gpus]), now)
        return True

    while events:
        now = events[0][0]
        while events and events[0][0] <= now:
            _, kind, k, gen = heapq.heappop(events)
            if kind == 1:
                waiting[k] = now
            elif gen == generation[k] and k in running:
                stop(k, now)
        blocked: set[tuple[str, int]] = set()
        for k in list(waiting):
            task = tasks[k]
            shape = (task.team, memo.shape(task.request))
            if k not in waiting or shape in blocked:
                continue
            if isinstance(admit(task.team, amounts[k], usage, queues), Admitted):
                try:
                    chosen = memo.place(task.request, nodes)
                except NoFit:
                    pass
                else:
                    begin(k, index[chosen.node], chosen.gpu_indices, now)
                    continue
            if not within_quota(task.team, amounts[k], usage, queues):
                blocked.add(shape)
                continue
            reclaiming.setdefault(k, waiting[k])
            if not preempt_for(k, now):
                blocked.add(shape)
    return {"reclaim_waits": reclaim_waits, "preemptions": preemptions,
            "before_first_checkpoint": before_first_checkpoint, "lost_gpu_hours": lost_milli_s / 1000 / 3600,
            "never_started": len(waiting)}


def figures(run: dict[str, Any]) -> dict[str, Any]:
    waits = run["reclaim_waits"]
    return {"reclaims": len(waits), "reclaim_mean_s": statistics.fmean(waits) if waits else math.nan,
            "reclaim_p95_s": p95(waits), "preemptions": run["preemptions"],
            "before_first_checkpoint": run["before_first_checkpoint"], "lost_gpu_hours": run["lost_gpu_hours"],
            "never_started": run["never_started"]}


def _replay_one(inputs: Inputs, order: str, policy: str, seed: int, interval: float) -> dict[str, Any]:
    pool, pods, _ = prepare(inputs)
    tasks = workload(pods, sum(len(n.gpus) for n in pool), inputs.load, seed)
    return figures(replay(tasks, pool, order, policy, seed, interval))


def mean(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}


def table(results: Mapping[str, dict[str, float]]) -> str:
    kueue = results["kueue"]
    lines = [f"{'victim order':<13} {'reclaims':>8} {'mean wait':>10} {'p95 wait':>10} {'preemptions':>11} "
             f"{'no ckpt yet':>11} {'GPU-h lost':>10} {'lost vs kueue':>13}"]
    for order, r in results.items():
        ratio = r["lost_gpu_hours"] / kueue["lost_gpu_hours"] if kueue["lost_gpu_hours"] else math.nan
        lines.append(f"{order:<13} {r['reclaims']:>8.0f} {r['reclaim_mean_s']:>9.0f}s {r['reclaim_p95_s']:>9.0f}s "
                     f"{r['preemptions']:>11.1f} {r['before_first_checkpoint']:>11.1f} {r['lost_gpu_hours']:>10.1f} "
                     + (f"{ratio:>13.2f}" if order != "none" else f"{'':>13}"))
    return "\n".join(lines)


def verdict(results: Mapping[str, dict[str, float]]) -> str:
    ours, kueue = results["ours"], results["kueue"]
    half = ours["lost_gpu_hours"] <= 0.5 * kueue["lost_gpu_hours"]
    latency = ours["reclaim_p95_s"] / kueue["reclaim_p95_s"] if kueue["reclaim_p95_s"] else math.nan
    return (f"GPU-hours lost {ours['lost_gpu_hours']:.1f} against Kueue's order's {kueue['lost_gpu_hours']:.1f}: "
            f"{'at most' if half else 'MORE than'} half; reclaim p95 {latency:.2f}x Kueue's")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(parser)
    parser.add_argument("--checkpoint-interval", type=float, default=CHECKPOINT_INTERVAL_S,
                        help=f"seconds of run between a task's checkpoints (default {CHECKPOINT_INTERVAL_S:g})")
    args = parser.parse_args(argv)
    if not args.checkpoint_interval > 0 or not math.isfinite(args.checkpoint_interval):
        parser.error(f"--checkpoint-interval must be a number of seconds > 0, got {args.checkpoint_interval}")
    began = time.monotonic()
    inputs = workload_inputs(args)
    pods_path = inputs.pods
    pool, kept, _ = prepare(inputs)
    runs: dict[str, list[dict[str, Any]]] = {order: [] for order in ORDERS}
    with ProcessPoolExecutor(args.workers) as workers:
        futures = [(order, workers.submit(_replay_one, inputs, order, args.policy, seed, args.checkpoint_interval))
                   for seed in args.seeds for order in ORDERS]
        for order, future in futures:
            runs[order].append(future.result())
    results = {order: mean(r) for order, r in runs.items()}
    print(f"{len(kept)} tasks of {pods_path.name} on {len(pool)} nodes with {sum(len(n.gpus) for n in pool)} GPUs, "
          f"offered load {args.load:g}x; four teams with a quarter of the GPUs each, borrowing; a checkpoint every "
          f"{args.checkpoint_interval:g} s of run; placement {args.policy}; mean over seeds "
          f"{','.join(map(str, args.seeds))}.")
    print(table(results))
    print("  " + verdict(results))
    print(f"({time.monotonic() - began:.0f} s)")
    if args.json:
        doc = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "checkpoint_interval_s": args.checkpoint_interval,
               "preemption": {order: results[order] for order in ("kueue", "ours")}, "none": results["none"],
               "seeds": runs}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
