"""Teams sharing one pool through queues, replayed in time on the openb trace.

Each task of the trace arrives at its creation time, runs for its recorded duration (deletion
less creation) once it starts, and waits while nothing lets it start. Who may start is decided
by :mod:`provider.scheduling.queues` (admission, and the order of the waiting line) and where,
by :func:`provider.scheduling.place` with the operator's default policy: the functions
production runs, unchanged. What the replay adds is only time, teams and the strategies below.

* **Time.** In real time the trace is nearly empty: over its 149 days the default workload keeps
  about 14 of its pool's 6,212 GPUs busy, and 90% of its tasks are created in the last fifth
  of that span, so dividing its times by one factor would leave the pool idle for most of the
  replay and flooded at its end. The replay keeps each task's duration and the trace's order of
  creation, and spaces the arrivals as a seeded Poisson stream at the rate that makes the
  offered GPU load ``--load`` (default 1.2) times the pool's capacity: demand exceeds supply,
  which is when sharing rules matter. The pool is a seeded sample of ``--pool-share`` (10%) of
  the trace's nodes, so that the trace has enough tasks to overload it.
* **Teams.** Each task belongs to one of four teams, drawn from the seed with unequal weights
  (:data:`TEAMS`: 40%, 30%, 20% and 10% of the tasks). Each team's queue has a quota of a
  quarter of the pool's GPUs (equal shares; fair sharing weights them equally too). Only GPUs
  are governed: the openb hosts' CPUs and memory are seldom what a task waits for.
* **Strategies**, on the same arrivals, durations and teams:
  ``fcfs``: today's pool, one line in arrival order, no quotas; ``strict``: a quota per team
  and no borrowing (what Airflow pools give); ``kueue``: quotas with borrowing of idle quota,
  the waiting line in arrival order across queues (Kueue's ``BestEffortFIFO``); ``ours``:
  quotas with borrowing, the line in :func:`~provider.scheduling.queues.order` (the queue
  furthest below its fair share first; :class:`FairLine` keeps that same line between events
  instead of recomputing it at each). In every strategy a waiting task that cannot start
  does not hold back those behind it, as :func:`~provider.scheduling.queues.may_start` says.

Reported per strategy, over the arrival window (first to last arrival): each team's mean and
95th-percentile wait, the GPU-hours it was served, the pool's GPU utilisation (allocated over
capacity), and Jain's index across teams of the share each received over its fair share (the
max-min fair split of the GPUs by the teams' demands, :func:`bench.jct_sim.water_fill`),
averaged over the time in which demand exceeded the pool.

``--compare-policies`` also replays first come, first served on the same arrivals with the
placement policies of :data:`COMPARED_POLICIES` beside ``--policy``: the pool's utilisation,
all tasks' mean and 95th-percentile wait, and the mean wait of each size of task, since where
small tasks go decides whether a large one ever finds a whole host.

Data: the openb node and pod lists of ``bench/placement_sim.py`` (Alibaba cluster-trace-GPU,
Apache-2.0), read from ``--trace-dir`` (default ``../shared/traces/openb``).

    python bench/queue_sim.py                       # the default workload, seeds 1-3
    python bench/queue_sim.py --seeds 1-10 --json queues.json
    python bench/queue_sim.py --compare-policies    # and placement policies under fcfs
    python bench/queue_sim.py --smoke               # seconds: what the test suite runs
"""

from __future__ import annotations

import argparse
import csv
import functools
import heapq
import json
import math
import random
import statistics
import sys
import time
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from operator import add
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.jct_sim import DEFAULT_POLICY, water_fill  # noqa: E402
from placement_sim import NODES_FILE, default_trace_dir, load_nodes, load_pods, parse_seeds  # noqa: E402
from provider.scheduling import NodeState, PlacementContext, PlacementRequest, apply, get_policy, release  # noqa: E402
from provider.scheduling.filters import reasons  # noqa: E402
from provider.scheduling.no_fit import NoFit  # noqa: E402
from provider.scheduling.queues import (  # noqa: E402
    RESOURCES, Admitted, Amounts, QueueSpec, Waiting, admit, quota_totals)
from replay_memo import PlacementMemo  # noqa: E402

TEAMS = {"vision": 0.4, "nlp": 0.3, "speech": 0.2, "rl": 0.1}
"""Each team and the share of the tasks drawn for it: unequal demand, equal quotas."""
STRATEGIES = ("fcfs", "strict", "kueue", "ours")
ONE_LINE = "pool"
"""The single queue of ``fcfs``: it governs nothing."""
LOAD = 1.2
"""GPU time asked within the arrival window over what the pool can give in it."""
POOL_SHARE = 0.1
COMPARED_POLICIES = ("fragmentation", "fragmentation_balanced")
"""What ``--compare-policies`` sets beside ``--policy``: FGD, and FGD keeping CPU and memory
able to feed the GPUs it leaves."""
"""The share of the trace's nodes that make the pool (a seeded sample)."""
SMOKE_POOL_SHARE, SMOKE_PODS = 0.01, 400
SAMPLES = 200
"""How many evenly spaced instants of the arrival window a replay notes each team's allocation
at: enough to draw it, few enough to keep with every replay."""


@dataclass(frozen=True, slots=True)
class Task:
    """One task of the trace as the replay sees it."""

    index: int
    team: str
    arrival: float
    duration: float
    request: PlacementRequest

    @property
    def amounts(self) -> Amounts:
        return Amounts.of(self.request)


def load_times(path: Path) -> dict[str, tuple[float, float]]:
    """Each pod's (creation, deletion) time in seconds, by name."""
    with path.open(newline="") as f:
        return {row["name"]: (float(row["creation_time"]), float(row["deletion_time"])) for row in csv.DictReader(f)}


def arrival_rate(durations: Sequence[float], gpus: Sequence[float], capacity: float, load: float) -> float:
    """Tasks per second at which the offered GPU load over the arrival window W (each task's
    GPUs times its duration, a duration counted up to W, over the pool's ``capacity`` times W)
    is ``load``, with W = tasks / rate. Found by bisection: the offered load grows with the
    rate, towards all tasks at once. Cutting at W keeps the trace's few tasks that run for
    months (34 of the default workload's, three quarters of its GPU-seconds) from counting as
    load they cannot put on a window of hours."""
    count = len(durations)

    def offered(rate: float) -> float:
        window = count / rate
        return sum(g * min(d, window) for d, g in zip(durations, gpus)) / (capacity * window)

    low, high = 1e-9, 1e9
    if offered(high) < load:
        raise ValueError(f"the tasks ask too few GPUs for a load of {load:g} on {capacity:g} GPUs, even all "
                         "arriving at once; lower --load or --pool-share")
    for _ in range(200):
        mid = math.sqrt(low * high)
        if mid in (low, high):
            break  # the bounds are adjacent floats: further halving would leave them as they are
        low, high = (mid, high) if offered(mid) < load else (low, mid)
    return high


def workload(pods: Sequence[tuple[PlacementRequest, float, float]], capacity_gpus: float, load: float,
             seed: int) -> list[Task]:
    """The tasks of one seed in the trace's order of creation, each with its duration and a team
    drawn for it, arriving as a seeded Poisson stream at :func:`arrival_rate` (the gaps rescaled
    so that the window is exactly tasks / rate)."""
    rng = random.Random(f"teams-{seed}")
    names, weights = list(TEAMS), list(TEAMS.values())
    ordered = sorted(pods, key=lambda p: p[1])
    durations = [max(0.0, d - a) for _, a, d in ordered]
    rate = arrival_rate(durations, [r.gpu_milli_total / 1000 for r, _, _ in ordered], capacity_gpus, load)
    gaps = [rng.expovariate(1.0) for _ in ordered]
    scale = len(gaps) / (sum(gaps) * rate)
    tasks, at = [], 0.0
    for k, ((request, _, _), duration, gap) in enumerate(zip(ordered, durations, gaps)):
        at += gap * scale
        tasks.append(Task(k, rng.choices(names, weights)[0], at, duration, request))
    return tasks


def queue_setup(strategy: str, capacity_milli: int) -> dict[str, QueueSpec]:
    """The queues a strategy runs with (see the module's description)."""
    if strategy == "fcfs":
        return {ONE_LINE: QueueSpec(ONE_LINE, quota={})}
    share = capacity_milli // len(TEAMS)
    borrowing = {"gpu_milli": 0} if strategy == "strict" else None
    return {t: QueueSpec(t, {"gpu_milli": share}, borrowing_limit=borrowing) for t in TEAMS}


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


@dataclass(frozen=True, slots=True)
class Sample:
    """Each team's allocated GPUs and its fair share of the pool (the max-min fair split by the
    teams' demands) at one instant, in milli-GPUs, in :data:`TEAMS` order."""

    at: float
    allocated: tuple[int, ...]
    fair: tuple[float, ...]


class Meter:
    """What the pool served each team over the arrival window, integrated between events, and
    each team's allocation at :data:`SAMPLES` evenly spaced instants of the window (what
    ``bench/plot_queue_shares.py`` draws)."""

    def __init__(self, capacity_milli: int, window_end: float) -> None:
        self.capacity = capacity_milli
        self.end = window_end
        self.at = 0.0
        self.allocated = dict.fromkeys(TEAMS, 0)
        self.waiting = dict.fromkeys(TEAMS, 0)
        self.served = dict.fromkeys(TEAMS, 0.0)  # milli-GPU-seconds
        self.over_s = 0.0
        self.jain_s = 0.0
        self.samples: list[Sample] = []

    def _fair(self, demand: Sequence[int]) -> list[float]:
        return water_fill(self.capacity, [(d, 1.0) for d in demand])

    def advance(self, now: float) -> None:
        """Account for the time from the last event to ``now`` (within the window): the
        allocation has been as it is now since the last event."""
        while len(self.samples) < SAMPLES and (at := len(self.samples) * self.end / SAMPLES) < now:
            self.samples.append(Sample(at, tuple(self.allocated[t] for t in TEAMS),
                                       tuple(self._fair([self.allocated[t] + self.waiting[t] for t in TEAMS]))))
        dt = max(0.0, min(now, self.end) - self.at)
        self.at = max(self.at, min(now, self.end))
        if not dt:
            return
        for team, milli in self.allocated.items():
            self.served[team] += milli * dt
        demand = [self.allocated[t] + self.waiting[t] for t in TEAMS]
        if sum(demand) > self.capacity:
            fair = self._fair(demand)
            shares = [self.allocated[t] / f for t, f in zip(TEAMS, fair) if f > 0]
            self.over_s += dt
            self.jain_s += jain(shares) * dt


_Entry = tuple[int, float, str, int, tuple[int, ...], Waiting]
"""A waiter in :class:`FairLine`: order()'s key within a queue (priority negated, since, owner),
the number of waiters added before it, its request's amounts, and the waiter."""
_Head = tuple[float, float, str, tuple[int, ...], int, list[_Entry]]
"""A queue's next waiter while :meth:`FairLine.order` merges: the queue's share counting the
waiters merged before it, the waiter's since, the queue, its usage so counted, the waiter's
place in the queue's line, and that line."""


def _sort_key(entry: _Entry) -> tuple[int, float, str, int]:
    return entry[:4]


class FairLine:
    """The line of :func:`~provider.scheduling.queues.order`, kept from one event to the next.

    ``order`` sorts every queue's waiters and recounts the shares from scratch; the replay asks
    for the line at every departure with hundreds of tasks waiting, which made ``ours`` the
    slowest strategy by far. This keeps each queue's waiters sorted by ``order``'s key as they
    arrive and leave, and merges the queues with a heap on ``order``'s key across queues (the
    share counting the requests already in line, then the head's wait, then the queue's name),
    computing each share as :func:`~provider.scheduling.queues.dominant_share` does. The
    result is the same line (``tests/unit/test_queue_sim.py`` checks it against ``order`` and
    ``may_start`` on random inputs); only the work is less.
    """

    def __init__(self, queues: Mapping[str, QueueSpec]) -> None:
        totals = quota_totals(queues)
        self._share_of = {
            name: (tuple((r, total) for r, (resource, total) in enumerate(zip(RESOURCES, totals))
                         if total and spec.governs(resource)), spec.weight)
            for name, spec in queues.items()}
        self._lines: dict[str, list[_Entry]] = {q: [] for q in queues}
        self._entries: dict[str, _Entry] = {}
        self._added = 0  # ties on order()'s whole key keep the order of adding, as its stable sort does

    def add(self, waiter: Waiting) -> None:
        """``waiter`` joins its queue's line; its owner must not be waiting already."""
        if waiter.owner in self._entries:
            raise ValueError(f"{waiter.owner} is waiting already")
        entry = (-waiter.priority, waiter.since, waiter.owner, self._added, waiter.request.values(), waiter)
        self._added += 1
        self._entries[waiter.owner] = entry
        insort(self._lines[waiter.queue], entry, key=_sort_key)

    def remove(self, owner: str) -> None:
        """The waiter ``owner`` leaves the line (it started)."""
        entry = self._entries.pop(owner)
        line = self._lines[entry[5].queue]
        del line[bisect_left(line, _sort_key(entry), key=_sort_key)]

    def _share(self, queue: str, used: tuple[int, ...]) -> float:
        """:func:`~provider.scheduling.queues.dominant_share` of ``used``, the same float."""
        governed, weight = self._share_of[queue]
        return max([0.0, *[used[r] / total for r, total in governed]]) / weight

    def order(self, usage: Mapping[str, Amounts]) -> Iterator[Waiting]:
        """The waiters in ``order(waiting, usage, queues)``'s order, one at a time. The line is
        taken as it is now: the caller may start waiters (and change ``usage``) while reading."""
        heap: list[_Head] = []
        for queue, line in self._lines.items():
            if line:
                used = usage.get(queue, Amounts()).values()
                heap.append((self._share(queue, used), line[0][1], queue, used, 0, list(line)))
        heapq.heapify(heap)  # the queue's name decides ties, so entries never compare further
        return self._merged(heap)

    def _merged(self, heap: list[_Head]) -> Iterator[Waiting]:
        share = self._share
        while heap:
            _, _, queue, used, i, line = heap[0]
            entry = line[i]
            yield entry[5]
            i += 1
            if i < len(line):
                used = tuple(map(add, used, entry[4]))
                heapq.heapreplace(heap, (share(queue, used), line[i][1], queue, used, i, line))
            else:
                heapq.heappop(heap)


def replay(tasks: Sequence[Task], pool: Sequence[NodeState], strategy: str, policy: str, seed: int) -> dict[str, Any]:
    """Run the tasks through ``strategy`` on ``pool``; each task's wait and the meter's totals."""
    nodes = list(pool)
    capacity = sum(1000 * len(n.gpus) for n in nodes)
    queues = queue_setup(strategy, capacity)
    memo = PlacementMemo(get_policy(policy), PlacementContext(rng=random.Random(seed)))
    index = {n.name: i for i, n in enumerate(nodes)}
    usage = {q: Amounts() for q in queues}
    meter = Meter(capacity, tasks[-1].arrival if tasks else 0.0)
    # What each task is to the queues and to placement, worked out once: the passes below
    # look at every waiting task again after each departure.
    amounts = [t.amounts for t in tasks]
    line_of = [ONE_LINE if strategy == "fcfs" else t.team for t in tasks]
    shape = [memo.shape(t.request) for t in tasks]
    blocks = list(zip(line_of, shape))  # what a pass skips once it failed
    asks = [(q, tuple(v if queues[q].governs(r) else 0 for r, v in zip(RESOURCES, a.values())))
            for q, a in zip(line_of, amounts)]  # all that admission reads of a request
    gpu_milli = [t.request.gpu_milli_total for t in tasks]
    fair = FairLine(queues) if strategy == "ours" else None
    events: list[tuple[float, int, int]] = [(t.arrival, 1, t.index) for t in tasks]  # departures (0) first
    heapq.heapify(events)
    waiting: dict[int, Task] = {}
    running: dict[int, tuple[int, tuple[int, ...]]] = {}
    started: dict[int, float] = {}
    freed: list[int] = []  # node of each departure, in order
    no_fit: dict[int, int] = {}  # request shape -> len(freed) when it last fitted nowhere

    def fits_somewhere(k: int) -> bool:
        """Whether the shape can fit on a node freed since it last fitted nowhere."""
        since = no_fit.get(shape[k])
        if since is None or any(not reasons(tasks[k].request, nodes[i]) for i in set(freed[since:])):
            return True
        no_fit[shape[k]] = len(freed)
        return False

    def start(k: int, now: float) -> bool:
        """Start the admitted task ``k`` if a node has room for it."""
        task, queue = tasks[k], line_of[k]
        try:
            chosen = memo.place(task.request, nodes)
        except NoFit:
            no_fit[shape[k]] = len(freed)
            return False
        i = index[chosen.node]
        nodes[i] = apply(nodes[i], task.request, chosen.gpu_indices)
        usage[queue] = usage[queue] + amounts[k]
        running[k] = (i, chosen.gpu_indices)
        started[k] = now
        del waiting[k]
        if fair is not None:
            fair.remove(str(k))
        meter.waiting[task.team] -= gpu_milli[k]
        meter.allocated[task.team] += gpu_milli[k]
        heapq.heappush(events, (now + task.duration, 0, k))
        return True

    def line() -> Iterable[int]:
        if fair is None:
            return list(waiting)  # arrival order
        return (int(w.owner) for w in fair.order(usage))

    while events:
        now = events[0][0]
        meter.advance(now)
        arrived: list[int] = []
        departed = False
        while events and events[0][0] <= now:
            _, kind, k = heapq.heappop(events)
            task = tasks[k]
            if kind == 1:
                waiting[k] = task
                if fair is not None:
                    fair.add(Waiting(str(k), task.team, 0, task.arrival, amounts[k]))
                meter.waiting[task.team] += gpu_milli[k]
                arrived.append(k)
                continue
            i, gpus = running.pop(k)
            nodes[i] = release(nodes[i], task.request, gpus)
            queue = line_of[k]
            usage[queue] = usage[queue] - amounts[k]
            meter.allocated[task.team] -= gpu_milli[k]
            freed.append(i)
            departed = True
        # Nothing frees room but a departure: after arrivals alone only the new tasks may start.
        # Within one pass the pool and the queues' usage only grow, so a queue and shape that
        # could not start once cannot start later in the pass either, nor can a queue's request
        # that admission refused once (it refuses more as usage grows). A task starts when it is
        # admitted and placed, whichever check refuses it first; the fit is asked first as the
        # cheaper one (remembered per shape) and the one that refuses most once the pool is full.
        blocked: set[tuple[str, int]] = set()
        refused: set[tuple[str, tuple[int, ...]]] = set()
        for k in line() if departed else arrived:
            if blocks[k] in blocked or k not in waiting:
                continue
            if not fits_somewhere(k):
                blocked.add(blocks[k])
            elif asks[k] in refused or not isinstance(admit(line_of[k], amounts[k], usage, queues), Admitted):
                refused.add(asks[k])
                blocked.add(blocks[k])
            elif not start(k, now):
                blocked.add(blocks[k])
    waits = {t.index: started[t.index] - t.arrival for t in tasks if t.index in started}
    return {"waits": waits, "never": len(tasks) - len(started), "meter": meter}


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else math.nan


def size_of(request: PlacementRequest) -> str:
    """A task's size as the comparison of placements groups waits: the GPUs it asks, ``<1`` for
    a share of one."""
    return "<1" if request.is_share else str(request.gpus)


def _size_order(size: str) -> float:
    return 0.5 if size == "<1" else float(size)


def figures(tasks: Sequence[Task], run: dict[str, Any]) -> dict[str, Any]:
    """A replay's figures, as ``--json`` writes them per strategy: per team, and for all tasks
    together with the mean wait by size (what tells placements apart)."""
    meter: Meter = run["meter"]
    span = meter.end or 1.0
    teams = {}
    for team in TEAMS:
        waits = [run["waits"][t.index] for t in tasks if t.team == team and t.index in run["waits"]]
        teams[team] = {"tasks": sum(1 for t in tasks if t.team == team),
                       "mean_wait_s": statistics.fmean(waits) if waits else math.nan, "p95_wait_s": p95(waits),
                       "gpu_hours": meter.served[team] / 1000 / 3600}
    by_size: dict[str, list[float]] = {}
    for t in tasks:
        if t.index in run["waits"]:
            by_size.setdefault(size_of(t.request), []).append(run["waits"][t.index])
    waits = list(run["waits"].values())
    everyone = {"mean_wait_s": statistics.fmean(waits) if waits else math.nan, "p95_wait_s": p95(waits),
                "by_gpus": {size: {"tasks": len(by_size[size]), "mean_wait_s": statistics.fmean(by_size[size])}
                            for size in sorted(by_size, key=_size_order)}}
    return {"utilisation": sum(meter.served.values()) / (meter.capacity * span),
            "jain": meter.jain_s / meter.over_s if meter.over_s else 1.0,
            "over_supply_share": meter.over_s / span, "never_started": run["never"], "teams": teams,
            "all": everyone}


@dataclass(frozen=True, slots=True)
class Inputs:
    """What every replay of one invocation reads: each worker process loads it once."""

    nodes: Path
    pods: Path
    pool_share: float
    smoke: bool
    load: float


@functools.lru_cache(maxsize=1)
def prepare(inputs: Inputs) -> tuple[list[NodeState], list[tuple[PlacementRequest, float, float]], int]:
    """The pool, the pods that fit it with their creation and deletion times, and how many pods
    the file had."""
    nodes = load_nodes(inputs.nodes)
    pool = sorted(random.Random(0).sample(nodes, max(1, round(inputs.pool_share * len(nodes)))),
                  key=lambda n: n.name)
    times = load_times(inputs.pods)
    pods = [(r, *times[name]) for name, r in load_pods(inputs.pods)]
    if inputs.smoke:
        pods = random.Random(0).sample(pods, min(SMOKE_PODS, len(pods)))
    return pool, fitting(pods, pool), len(pods)


def _replay_one(inputs: Inputs, strategy: str, policy: str, seed: int) -> dict[str, Any]:
    pool, pods, _ = prepare(inputs)
    tasks = workload(pods, sum(len(n.gpus) for n in pool), inputs.load, seed)
    return figures(tasks, replay(tasks, pool, strategy, policy, seed))


def fitting(pods: Sequence[tuple[PlacementRequest, float, float]],
            pool: Sequence[NodeState]) -> list[tuple[PlacementRequest, float, float]]:
    """The pods some empty node of ``pool`` can hold (a sample of nodes may lack a model)."""
    return [p for p in pods if any(not reasons(p[0], n) for n in pool)]


def mean_figures(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several seeds, each averaged (waits and GPU-hours per team too)."""
    def avg(key: str, rows: Sequence[dict[str, Any]]) -> float:
        return statistics.fmean(r[key] for r in rows)

    out: dict[str, Any] = {k: avg(k, runs) for k in ("utilisation", "jain", "over_supply_share", "never_started")}
    out["teams"] = {team: {k: avg(k, [r["teams"][team] for r in runs])
                           for k in ("tasks", "mean_wait_s", "p95_wait_s", "gpu_hours")} for team in TEAMS}
    everyone = [r["all"] for r in runs]
    out["all"] = {k: avg(k, everyone) for k in ("mean_wait_s", "p95_wait_s")}
    out["all"]["by_gpus"] = {size: {k: avg(k, [e["by_gpus"][size] for e in everyone]) for k in ("tasks", "mean_wait_s")}
                             for size in everyone[0]["by_gpus"]}  # the same tasks in every seed
    return out


def table(results: Mapping[str, dict[str, Any]]) -> str:
    lines = [f"{'strategy':<9} {'GPU util':>8} {'Jain':>6}  {'team':<7} {'tasks':>6} {'mean wait':>10} "
             f"{'p95 wait':>10} {'GPU-hours':>10}"]
    for strategy, r in results.items():
        for k, (team, t) in enumerate(r["teams"].items()):
            head = f"{strategy:<9} {r['utilisation']:>8.3f} {r['jain']:>6.3f}" if k == 0 else " " * 25
            lines.append(f"{head}  {team:<7} {t['tasks']:>6.0f} {t['mean_wait_s']:>9.0f}s {t['p95_wait_s']:>9.0f}s "
                         f"{t['gpu_hours']:>10.1f}")
    return "\n".join(lines)


def policy_table(results: Mapping[str, dict[str, Any]]) -> str:
    """Placement policies side by side: utilisation and waits of all tasks, then the mean wait
    of each size of task."""
    def name(policy: str) -> str:
        return f"{policy} (default)" if policy == DEFAULT_POLICY else policy

    lines = [f"{'policy':<24} {'GPU util':>8} {'mean wait':>10} {'p95 wait':>10}"]
    for policy, r in results.items():
        lines.append(f"{name(policy):<24} {r['utilisation']:>8.3f} {r['all']['mean_wait_s']:>9.0f}s "
                     f"{r['all']['p95_wait_s']:>9.0f}s")
    width = max(len(name(p)) for p in results) + 1
    lines += ["", f"{'GPUs asked':<10} {'tasks':>6}" + "".join(f"{name(p):>{width}}" for p in results)
              + "  (mean wait)"]
    for size, group in next(iter(results.values()))["all"]["by_gpus"].items():
        waits = [r["all"]["by_gpus"][size]["mean_wait_s"] for r in results.values()]
        lines.append(f"{size:<10} {group['tasks']:>6.0f}" + "".join(f"{w:>{width - 1}.0f}s" for w in waits))
    return "\n".join(lines)


def verdicts(results: Mapping[str, dict[str, Any]]) -> list[str]:
    """The goals, each with whether ``ours`` meets it."""
    ours, fcfs, strict = results["ours"], results["fcfs"], results["strict"]
    worse = [t for t in TEAMS if ours["teams"][t]["p95_wait_s"] > strict["teams"][t]["p95_wait_s"]]
    return [
        f"utilisation {ours['utilisation']:.3f} against first come first served's {fcfs['utilisation']:.3f}: "
        f"{'within' if fcfs['utilisation'] - ours['utilisation'] <= 0.01 else 'NOT within'} 1 point",
        "every team's p95 wait no worse than under strict quotas: "
        + ("yes" if not worse else f"NO ({', '.join(worse)})"),
        f"Jain's index while demand exceeds supply {ours['jain']:.3f}: {'at least' if ours['jain'] >= 0.95 else 'below'} 0.95",
    ]


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the trace, the pool, the teams' seeds, the load and the placement
    policy: every replay of teams sharing the pool takes them (``bench/preemption_sim.py`` too)."""
    parser.add_argument("--nodes", help="node CSV (default: the openb node list)")
    parser.add_argument("--pods", help="pod CSV with creation and deletion times (default: openb's default workload)")
    parser.add_argument("--trace-dir", default=str(default_trace_dir()))
    parser.add_argument("--seeds", type=parse_seeds, default=[1, 2, 3], help="seeds of the teams, e.g. 1-3 (default)")
    parser.add_argument("--pool-share", type=float, default=POOL_SHARE,
                        help=f"share of the trace's nodes in the pool (default {POOL_SHARE})")
    parser.add_argument("--load", type=float, default=LOAD, help=f"GPU time asked over the pool's (default {LOAD})")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"placement policy (default {DEFAULT_POLICY})")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE_POOL_SHARE:.0%} of the nodes, {SMOKE_PODS} pods, one seed")


def workload_inputs(args: argparse.Namespace) -> Inputs:
    """What :func:`add_workload_arguments`' options select; a smoke run keeps the first seed only."""
    trace = Path(args.trace_dir)
    pods_path = Path(args.pods) if args.pods else trace / "openb_pod_list_default.csv"
    share = SMOKE_POOL_SHARE if args.smoke else args.pool_share
    if args.smoke:
        args.seeds = args.seeds[:1]
    return Inputs(Path(args.nodes) if args.nodes else trace / NODES_FILE, pods_path, share, args.smoke, args.load)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(parser)
    parser.add_argument("--compare-policies", action="store_true",
                        help=f"also replay first come, first served with {' and '.join(COMPARED_POLICIES)} on the "
                             "same arrivals and compare them with --policy")
    args = parser.parse_args(argv)
    began = time.monotonic()
    inputs = workload_inputs(args)
    pods_path = inputs.pods
    pool, kept, count = prepare(inputs)
    capacity = sum(len(n.gpus) for n in pool)
    # First come, first served with --policy is both a strategy and the comparison's baseline.
    policies = [args.policy, *(p for p in COMPARED_POLICIES if p != args.policy)] if args.compare_policies else []
    jobs = [(s, args.policy) for s in STRATEGIES] + [("fcfs", p) for p in policies[1:]]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {job: [] for job in jobs}
    with ProcessPoolExecutor(args.workers) as workers:
        futures = [(job, workers.submit(_replay_one, inputs, *job, seed)) for seed in args.seeds for job in jobs]
        for job, future in futures:
            runs[job].append(future.result())
    results = {s: mean_figures(runs[s, args.policy]) for s in STRATEGIES}
    compared = {p: mean_figures(runs["fcfs", p]) for p in policies}
    print(f"{len(kept)} tasks of {pods_path.name} ({count - len(kept)} fit no node) on {len(pool)} nodes with "
          f"{capacity} GPUs, arrivals at an offered GPU load of {args.load:g}x the pool; teams "
          + ", ".join(f"{t} {w:.0%}" for t, w in TEAMS.items()) + f" of the tasks, a quarter of the GPUs each; "
          f"placement {args.policy}; mean over seeds {','.join(map(str, args.seeds))}.")
    print(table(results))
    for line in verdicts(results):
        print("  " + line)
    if compared:
        print(f"\nPlacement under first come, first served on the same arrivals; mean over seeds "
              f"{','.join(map(str, args.seeds))}.")
        print(policy_table(compared))
    print(f"({time.monotonic() - began:.0f} s)")
    if args.json:
        doc = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "strategies": results, "seeds": {s: runs[s, args.policy] for s in STRATEGIES}}
        if compared:
            doc["policies"] = compared
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
