"""Job completion time by placement policy, simulated in time: jobs that overlap on shared hosts.

``bench/cluster.py`` measures the same question on the real topology, but a 2-core machine gives
it three hosts of half a core and an hour for five seeds at three loads (``bench/jct_calibrate.py``
replays its runs in this model, which comes within 0.07 of it). This replay runs the placement core's policies unchanged (every decision is
:func:`provider.scheduling.place` on :class:`~provider.scheduling.NodeState` snapshots built as
the reservation layer builds them) on a model of what decides job completion time under overlap:

* **Hosts** have cores, GPUs (4) and a speed (work per core-second): 2 cores at speed 1 each, or
  with ``--mixed`` 1, 2 or 4 cores and a speed of 0.7-1.3, drawn per host from the seed.
* **Jobs** arrive as a seeded Poisson stream and each asks for one GPU. Two kinds
  (``--jobs``): ``reserved`` jobs reserve a CPU quota of half a core and use no more, as
  ``train_on_pool``'s tasks do, so reservations alone keep a host's cores from being
  overcommitted by jobs; ``gpu-only`` jobs reserve no CPU, as the example pipeline asks, and
  keep 0.5, 1 or 2 cores busy (drawn per job) when they can. A job alone takes a log-normal
  time (mean 30 s, sigma 0.4) on a speed-1 host; its work is that time its cores.
* **Processor sharing**: on each host the running jobs (capped at what they use) and the
  background share the cores by weighted max-min fairness (:func:`water_fill`), as the kernel's
  CFS shares them by weight and quota; a job's progress is its share times the host's speed.
  So a job placed beside busy neighbours runs slower, for as long as they overlap.
* **Background load that moves**: each host alternates between idle and a hog (a busy loop on
  every core, twice a job's weight, as ``bench/cluster.py``'s) in exponential spells (means
  60 s idle, 30 s busy), seeded per host. Placement sees it only in the measurements.
* **Measurements as the node agent makes them**: every second each host's CPU utilisation over
  the last second, and each GPU's (its job's share of what it would use), become readable
  ``lag`` seconds later; placement reads the newest readable sample with its time, and the
  claims as they are, counting jobs placed since that sample as load it does not show yet
  (:func:`provider.scheduling.accounting.with_unseen`, production's rule).
* **Load** is the offered work over the cores the background leaves on average (two thirds,
  summed over the hosts): at ``0.8`` the jobs would keep 80% of those busy. A job that does not
  fit (its GPU or its reserved CPU) waits in arrival order and takes the first room that frees.

Round-robin (job k on host k mod n, waiting for that host when it is full) is the anchor: each
policy's mean JCT is divided by round-robin's on the same arrivals, works and background (the
same seed), and the table gives the mean of those ratios over the seeds with a 95% confidence
interval (Student's t). ``(default)`` marks the operator's default policy; ``least_loaded:stale``
is it reading the measurements alone, without the unseen load. ``oracle`` is not a
policy: it puts each job where it would run fastest at that instant, knowing the true background
and weights that no measurement gives, which bounds what reading utilisation can buy for a
placement made one job at a time.

    python bench/jct_sim.py                          # the default sweep, both kinds of job
    python bench/jct_sim.py --jobs gpu-only --loads 0.5,0.8,0.95 --lags 0,1,5 --seeds 1-20
    python bench/jct_sim.py --smoke                  # seconds: what the test suite runs

``--json PATH`` writes ``results``: one object per sweep point and policy with ``jobs``,
``load``, ``lag_s``, ``hosts``, ``mixed``, ``policy``, ``default``, ``mean_jct_ratio_rr``,
``ci95_low``, ``ci95_high``, ``mean_jct_s`` and ``seeds``.
"""

from __future__ import annotations

import argparse
import heapq
import inspect
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from provider.operators.gpu_docker import GpuDockerOperator  # noqa: E402
from provider.scheduling import (  # noqa: E402
    GpuState,
    NoFit,
    NodeState,
    PlacementContext,
    PlacementRequest,
    get_policy,
    place,
)
from provider.scheduling.accounting import MEASURE_WINDOW_S, with_unseen  # noqa: E402
from placement_sim import parse_seeds  # noqa: E402

DEFAULT_POLICY: str = inspect.signature(GpuDockerOperator.__init__).parameters["placement_policy"].default
ANCHOR = "round_robin"
ORACLE = "oracle"
STALE = ":stale"
"""A policy name with this suffix reads the last measurement alone, without counting the jobs
placed since as load: the default policy without that remedy, to measure it."""
POLICIES = (ANCHOR, "random", "least_loaded", "least_loaded" + STALE, "best_fit", "fragmentation_balanced", ORACLE)
RESERVED = "reserved"
GPU_ONLY = "gpu-only"
JOB_CORES = 0.5
"""A reserved job's CPU quota and reservation, as ``train_on_pool``'s tasks ask."""
GPU_ONLY_CORES = (0.5, 1.0, 2.0)
"""What a job that reserves no CPU keeps busy, drawn per job: its data loading."""
JOB_ALONE_MEAN_S = 30.0
"""Mean seconds one job takes alone on a speed-1 host; its work is that times its cores."""
JOB_ALONE_SIGMA = 0.4
HOG_WEIGHT = 2.0
"""The background's CPU weight against a job's 1, as ``bench/cluster.py``'s hog."""
HOG_IDLE_MEAN_S = 60.0
HOG_BUSY_MEAN_S = 30.0
GPUS_PER_HOST = 4
INTERVAL_S = 1.0
"""The node agent's sampling interval."""
JOBS_PER_HOST = 10
JOBS_AT_LEAST = 120
"""Jobs per replay: ten per host, and at least this many so a small pool sees enough overlap."""
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Host:
    """One host: ``cores`` of ``speed`` work per core-second, and ``gpus`` GPUs."""

    name: str
    cores: float
    gpus: int = GPUS_PER_HOST
    speed: float = 1.0


@dataclass(frozen=True, slots=True)
class Job:
    """One training job: it arrives at ``arrival`` and needs ``work`` core-seconds at speed 1."""

    index: int
    arrival: float
    work: float
    cores: float = JOB_CORES
    """The CPU the job keeps busy when it can (its quota, when it reserves one)."""
    reserved_milli: int = round(JOB_CORES * 1000)
    """The milli-CPUs the job asks placement for (0: a GPU only, as the example pipeline asks)."""

    @property
    def request(self) -> PlacementRequest:
        return PlacementRequest(gpus=1, cpu_milli=self.reserved_milli)


@dataclass(frozen=True, slots=True)
class Spell:
    """Background load on ``host`` from ``start`` to ``end``: a busy loop on every core."""

    host: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything a replay of one seed needs; every policy runs on the same one."""

    hosts: tuple[Host, ...]
    jobs: tuple[Job, ...]
    spells: tuple[Spell, ...]
    lag_s: float
    interval_s: float = INTERVAL_S


def water_fill(capacity: float, demands: Sequence[tuple[float, float]]) -> list[float]:
    """Each claimant's rate when ``demands`` (cap, weight) share ``capacity``: weighted max-min
    fairness, as the kernel shares cores by weight among tasks capped by their quota. A claimant
    never gets more than its cap; what a capped one leaves goes to the others by weight."""
    rates = [0.0] * len(demands)
    open_ = [i for i, (cap, weight) in enumerate(demands) if cap > 0 and weight > 0]
    left = capacity
    while open_ and left > EPS:
        level = left / sum(demands[i][1] for i in open_)
        capped = [i for i in open_ if demands[i][0] <= level * demands[i][1] + EPS]
        if not capped:
            for i in open_:
                rates[i] = level * demands[i][1]
            return rates
        for i in capped:
            rates[i] = demands[i][0]
            left -= demands[i][0]
        open_ = [i for i in open_ if i not in capped]
    return rates


@dataclass
class Running:
    """A job running on a host (the host's :class:`HostState` holds it): on which GPU, how much
    work is left, and when it started."""

    job: Job
    gpu: int
    left: float
    started: float


@dataclass
class HostState:
    host: Host
    jobs: list[Running] = field(default_factory=list)
    hog: bool = False
    busy: float = 0.0
    """Core-seconds used so far (jobs and background): what the agent's CPU reading differences."""
    gpu_busy: list[float] = field(default_factory=list)
    seen: list[tuple[float, float, float, tuple[float, ...]]] = field(default_factory=list)
    """Samples as (visible from, taken at, CPU %, each GPU's %), oldest first."""
    last_busy: float = 0.0
    last_gpu_busy: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, host: Host) -> HostState:
        """``host`` idle, with nothing measured yet."""
        return cls(host, gpu_busy=[0.0] * host.gpus, last_gpu_busy=[0.0] * host.gpus)

    shares: list[float] | None = None
    """:meth:`rates` until the jobs or the background change."""

    def rates(self) -> list[float]:
        """Each running job's share of the cores (then the background's, when on)."""
        if self.shares is None:
            self.shares = water_fill(self.host.cores, self.demands())
        return self.shares

    def demands(self) -> list[tuple[float, float]]:
        """(cap, weight) of each running job, then of the background when it is on."""
        return [(r.job.cores, 1.0) for r in self.jobs] + ([(self.host.cores, HOG_WEIGHT)] if self.hog else [])

    def change(self, started: Running | None = None, ended: Running | None = None, hog: bool | None = None) -> None:
        """A job starts or ends here, or the background switches."""
        if started is not None:
            self.jobs.append(started)
        if ended is not None:
            self.jobs.remove(ended)
        if hog is not None:
            self.hog = hog
        self.shares = None

    def sample(self, tick: float, interval_s: float, lag_s: float) -> None:
        """The agent's reading at ``tick``: CPU and GPU use over the last ``interval_s``, which
        placement can read from ``lag_s`` later."""
        cpu = 100.0 * (self.busy - self.last_busy) / (interval_s * self.host.cores)
        gpus = tuple(100.0 * (b - lb) / interval_s for b, lb in zip(self.gpu_busy, self.last_gpu_busy))
        self.seen.append((tick + lag_s, tick, min(100.0, cpu), gpus))
        del self.seen[:-(int(lag_s / interval_s) + 2)]  # older ones are never read again
        self.last_busy, self.last_gpu_busy = self.busy, list(self.gpu_busy)

    def visible(self, now: float) -> tuple[float, float, tuple[float, ...]]:
        """The newest sample placement can read at ``now`` (idle before the first): when it was
        taken, the CPU %, each GPU's %."""
        for at, taken, cpu, gpus in reversed(self.seen):
            if at <= now + EPS:
                return taken, cpu, gpus
        return 0.0, 0.0, (0.0,) * self.host.gpus


def node_state(state: HostState, now: float, unseen: bool = True) -> NodeState:
    """The host as placement reads it: reservations exact, measurements as last visible, and
    (``unseen``) the jobs placed since that measurement counted as load it does not show."""
    taken, cpu_pct, gpu_pct = state.visible(now)
    held = {r.gpu for r in state.jobs}
    since = taken - MEASURE_WINDOW_S
    gpus = tuple(
        GpuState(index=i, model="sim", memory_total_mb=81920, utilization_pct=gpu_pct[i],
                 allocated_milli=1000 if i in held else 0)
        for i in range(state.host.gpus)
    )
    node = NodeState(
        name=state.host.name, cpu_milli=round(state.host.cores * 1000), memory_mb=256 * 1024, gpus=gpus,
        cpu_allocated_milli=sum(r.job.reserved_milli for r in state.jobs), cpu_utilization_pct=cpu_pct,
        measured_at=taken,
    )
    return with_unseen(node, [r.job.request for r in state.jobs if r.started > since]) if unseen else node


def _fits(state: HostState, job: Job) -> int | None:
    """A free GPU of ``state`` when ``job``'s reservation fits there (the pinned policies)."""
    if sum(r.job.reserved_milli for r in state.jobs) + job.reserved_milli > state.host.cores * 1000 + EPS:
        return None
    free = sorted(set(range(state.host.gpus)) - {r.gpu for r in state.jobs})
    return free[0] if free else None


def _oracle(hosts: Sequence[HostState], job: Job) -> tuple[int, int] | None:
    """The host where ``job`` would run fastest now, knowing the true background and weights
    (which no measurement gives): a bound on what reading utilisation can buy, not a policy.
    Ties go to the host with fewer jobs, then the first."""
    best: tuple[float, int, int, int] | None = None
    for h, state in enumerate(hosts):
        gpu = _fits(state, job)
        if gpu is None:
            continue
        rate = water_fill(state.host.cores, [*state.demands(), (job.cores, 1.0)])[-1] * state.host.speed
        key = (rate, -len(state.jobs), -h, gpu)
        if best is None or key[:3] > best[:3]:
            best = key
    return None if best is None else (-best[2], best[3])


def replay(scenario: Scenario, policy: str, seed: int) -> list[float]:
    """Each job's completion time (arrival to end) under ``policy``, in job order."""
    hosts = [HostState.of(h) for h in scenario.hosts]
    index = {h.host.name: i for i, h in enumerate(hosts)}
    pick = random.Random(seed)
    pinned = {j.index: j.index % len(hosts) for j in scenario.jobs} if policy == ANCHOR else (
        {j.index: pick.randrange(len(hosts)) for j in scenario.jobs} if policy == "random" else None)
    scorer = None if pinned is not None or policy == ORACLE else get_policy(policy.removesuffix(STALE))
    unseen = not policy.endswith(STALE)
    context = PlacementContext(rng=random.Random(seed))
    # Background switches and arrivals, in time order; samples come every interval.
    changes = sorted([(s.start, index[s.host], True) for s in scenario.spells]
                     + [(s.end, index[s.host], False) for s in scenario.spells])
    arrivals = list(scenario.jobs)
    waiting: list[Job] = []
    jct: dict[int, float] = {}
    now, tick, a, c = 0.0, scenario.interval_s, 0, 0

    def start_waiting() -> None:
        still: list[Job] = []
        for job in waiting:
            where = _place(job)
            if where is None:
                still.append(job)
            else:
                h, gpu = where
                hosts[h].change(started=Running(job, gpu, job.work, now))
        waiting[:] = still

    def _place(job: Job) -> tuple[int, int] | None:
        if policy == ORACLE:
            return _oracle(hosts, job)
        if pinned is not None:
            h = pinned[job.index]
            gpu = _fits(hosts[h], job)
            return None if gpu is None else (h, gpu)
        assert scorer is not None
        try:
            chosen = place(job.request, [node_state(s, now, unseen) for s in hosts], scorer, context)
        except NoFit:
            return None
        return index[chosen.node], chosen.gpu_indices[0]

    while len(jct) < len(scenario.jobs):
        rates = [s.rates() for s in hosts]
        # The next event: an arrival, a background switch, a sample, or a job's end.
        upcoming = [tick]
        if a < len(arrivals):
            upcoming.append(arrivals[a].arrival)
        if c < len(changes):
            upcoming.append(changes[c][0])
        for s, r in zip(hosts, rates):
            for run, rate in zip(s.jobs, r):
                if rate > EPS:
                    upcoming.append(now + run.left / (rate * s.host.speed))
        step = max(0.0, min(upcoming) - now)
        for s, r in zip(hosts, rates):
            s.busy += sum(r) * step
            for run, rate in zip(s.jobs, r):
                run.left -= rate * s.host.speed * step
                s.gpu_busy[run.gpu] += rate / run.job.cores * step
        now += step
        for s in hosts:
            done = [run for run in s.jobs if run.left <= EPS * max(1.0, run.job.work)]
            for run in done:
                s.change(ended=run)
                jct[run.job.index] = now - run.job.arrival
        while c < len(changes) and changes[c][0] <= now + EPS:
            hosts[changes[c][1]].change(hog=changes[c][2])
            c += 1
        if tick <= now + EPS:
            for s in hosts:
                s.sample(tick, scenario.interval_s, scenario.lag_s)
            tick += scenario.interval_s
        while a < len(arrivals) and arrivals[a].arrival <= now + EPS:
            waiting.append(arrivals[a])
            a += 1
        start_waiting()
    return [jct[j.index] for j in scenario.jobs]


def _spells(rng: random.Random, host: str, until: float) -> list[Spell]:
    spells, t = [], rng.expovariate(1 / HOG_IDLE_MEAN_S)
    while t < until:
        busy = rng.expovariate(1 / HOG_BUSY_MEAN_S)
        spells.append(Spell(host, t, t + busy))
        t += busy + rng.expovariate(1 / HOG_IDLE_MEAN_S)
    return spells


@dataclass(frozen=True, slots=True)
class Point:
    """One sweep point: the pool and the conditions every policy is compared under."""

    load: float
    lag_s: float
    hosts: int
    mixed: bool
    jobs: str = RESERVED
    """:data:`RESERVED` (each job reserves its CPU quota) or :data:`GPU_ONLY` (a GPU only)."""


def job_count(hosts: int) -> int:
    """How many jobs one replay of a pool of ``hosts`` runs (see :data:`JOBS_AT_LEAST`)."""
    return max(JOBS_AT_LEAST, JOBS_PER_HOST * hosts)


def scenario(point: Point, seed: int, jobs: int | None = None) -> Scenario:
    """The hosts, jobs and background of one seed at ``point`` (see the module's description)."""
    rng = random.Random(seed)
    pool = tuple(
        Host(f"h{i + 1:03d}", cores=rng.choice((1.0, 2.0, 4.0)) if point.mixed else 2.0,
             speed=round(rng.uniform(0.7, 1.3), 2) if point.mixed else 1.0)
        for i in range(point.hosts)
    )
    busy_share = HOG_BUSY_MEAN_S / (HOG_BUSY_MEAN_S + HOG_IDLE_MEAN_S)
    capacity = sum(h.cores * h.speed for h in pool) * (1 - busy_share)  # work per second left to jobs
    mu = math.log(JOB_ALONE_MEAN_S) - JOB_ALONE_SIGMA ** 2 / 2
    shapes = []
    for _ in range(job_count(point.hosts) if jobs is None else jobs):
        cores = JOB_CORES if point.jobs == RESERVED else rng.choice(GPU_ONLY_CORES)
        shapes.append((cores, cores * rng.lognormvariate(mu, JOB_ALONE_SIGMA)))
    mean_work = statistics.fmean(work for _, work in shapes)
    rate = point.load * capacity / mean_work  # jobs per second
    t, stream = 0.0, []
    for k, (cores, work) in enumerate(shapes):
        t += rng.expovariate(rate)
        stream.append(Job(k, t, work, cores, round(cores * 1000) if point.jobs == RESERVED else 0))
    spells = [s for h in pool for s in _spells(rng, h.name, t * 2 + 600)]
    return Scenario(pool, tuple(stream), tuple(spells), point.lag_s)


T95 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13,
       2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04)
"""Student's t two-sided 95% quantiles for 1..30 degrees of freedom (1.96 beyond)."""


def ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% confidence interval of ``values`` (Student's t)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = (T95[len(values) - 2] if len(values) - 1 <= len(T95) else 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _run_seed(point: Point, seed: int, policies: Sequence[str], jobs: int | None) -> dict[str, float]:
    s = scenario(point, seed, jobs)
    return {p: statistics.fmean(replay(s, p, seed)) for p in policies}


def sweep(points: Iterable[Point], seeds: Sequence[int], policies: Sequence[str], jobs: int | None = None,
          workers: int = 2) -> list[dict[str, Any]]:
    """Every policy's mean JCT ratio to round-robin at every point, over ``seeds``."""
    points = list(points)
    with ProcessPoolExecutor(workers) as pool:
        runs = {(pt, seed): pool.submit(_run_seed, pt, seed, policies, jobs) for pt in points for seed in seeds}
        means = {key: run.result() for key, run in runs.items()}
    results = []
    for pt in points:
        for policy in policies:
            ratios = [means[pt, s][policy] / means[pt, s][ANCHOR] for s in seeds]
            mean, low, high = ci95(ratios)
            results.append({
                "load": pt.load, "lag_s": pt.lag_s, "hosts": pt.hosts, "mixed": pt.mixed, "jobs": pt.jobs,
                "policy": policy,
                "default": policy == DEFAULT_POLICY, "mean_jct_ratio_rr": round(mean, 4),
                "ci95_low": round(low, 4), "ci95_high": round(high, 4),
                "mean_jct_s": round(statistics.fmean(means[pt, s][policy] for s in seeds), 2), "seeds": len(seeds),
            })
    return results


def table(results: Sequence[dict[str, Any]]) -> str:
    """One line per sweep point and policy: the ratio to round-robin and its interval."""
    lines = [f"{'jobs':<8} {'load':>5} {'lag':>4} {'hosts':>5} {'mixed':>5}  {'policy':<24} {'mean JCT':>9} "
             f"{'vs round-robin [95% CI]':>26}"]
    for r in results:
        mark = " (default)" if r["default"] else ""
        lines.append(f"{r['jobs']:<8} {r['load']:>5.2f} {r['lag_s']:>4g} {r['hosts']:>5} {str(r['mixed']):>5}  "
                     f"{r['policy'] + mark:<24} {r['mean_jct_s']:>8.1f}s "
                     f"{r['mean_jct_ratio_rr']:>8.3f} [{r['ci95_low']:.3f}-{r['ci95_high']:.3f}]")
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def default_points() -> list[Point]:
    """The default sweep, for both kinds of job: load at the topology's size (3 hosts, 1 s lag),
    then at 80% the lag and mixed hosts; and where stale readings herd most, 30 hosts with jobs
    that reserve no CPU (larger pools: ``--hosts``)."""
    points = []
    for jobs in (RESERVED, GPU_ONLY):
        points += [Point(load, 1.0, 3, False, jobs) for load in (0.5, 0.8, 0.95)]
        points += [Point(0.8, lag, 3, False, jobs) for lag in (0.0, 2.0, 5.0)]
        points.append(Point(0.8, 1.0, 3, True, jobs))
    points += [Point(0.8, lag, 30, False, GPU_ONLY) for lag in (1.0, 5.0)]
    return points


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=_floats, help="loads, e.g. 0.5,0.8,0.95 (with --lags and --hosts: their grid)")
    parser.add_argument("--lags", type=_floats, default=[1.0], help="measurement lags in seconds (default 1)")
    parser.add_argument("--hosts", type=lambda t: [int(x) for x in t.split(",")], default=[3], help="pool sizes")
    parser.add_argument("--mixed", action="store_true", help="heterogeneous hosts (cores 1/2/4, speed 0.7-1.3)")
    parser.add_argument("--jobs", choices=(RESERVED, GPU_ONLY), default=RESERVED,
                        help="jobs that reserve their CPU quota (default) or ask for a GPU only")
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(1, 21)), help="seeds, e.g. 1-20 (default)")
    parser.add_argument("--policies", type=lambda t: t.split(","), default=list(POLICIES))
    parser.add_argument("--job-count", type=int, help=f"jobs per replay (default {JOBS_PER_HOST} per host, "
                        f"at least {JOBS_AT_LEAST})")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 2 seeds, 3 hosts, 8 jobs per host")
    args = parser.parse_args(argv)
    policies = [ANCHOR, *[p for p in args.policies if p != ANCHOR]]
    if args.smoke:
        points, seeds, count = [Point(0.8, 1.0, 3, False, RESERVED), Point(0.8, 1.0, 3, True, GPU_ONLY)], [1, 2], 24
    elif args.loads is not None:
        points = [Point(load, lag, hosts, args.mixed, args.jobs)
                  for load in args.loads for lag in args.lags for hosts in args.hosts]
        seeds, count = args.seeds, args.job_count
    else:
        points, seeds, count = default_points(), args.seeds, args.job_count
    started = time.monotonic()
    results = sweep(points, seeds, policies, count, args.workers)
    print(table(results))
    jobs = f"{count} jobs" if count else f"{JOBS_PER_HOST} jobs per host (at least {JOBS_AT_LEAST})"
    print(f"\n{len(seeds)} seeds per point, {jobs} per replay; ratios are each seed's mean JCT over "
          f"round-robin's on the same arrivals; {time.monotonic() - started:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
