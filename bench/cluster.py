"""Job completion time by placement policy under concurrency, on the multi-machine topology.

The topology of :mod:`tools.cluster.topology` (a control machine with Airflow, 3 Celery workers,
3 GPU hosts, each machine a network namespace) runs trainer jobs submitted as DAG runs through
the REST API, so every placement is made by the real ``GpuDockerOperator`` on a Celery worker.
Each job asks for one GPU and half a core (a CPU quota, also reserved) and trains single-threaded.

* CPUs: the machine has two cores for three hosts, so the hosts' engines are pinned to cgroup v1
  cpusets h1 -> CPU 0, h2 -> CPU 1, h3 -> CPUs 0,1, and each agent reports only its host's CPUs.
  Every agent then measures exactly the cores its host's containers run on, and round-robin is
  not handicapped by an uneven layout (h1 and h2 mirror each other). What this costs: h3's cores
  are h1's and h2's too, so work on h3 slows the others, the reservations admit 2 + 2 + 4 half-core
  jobs on two cores, and Airflow itself (scheduler, workers, triggerer, PostgreSQL) is pinned
  nowhere and shares both cores with the jobs; the agents count it as load like anything else.
  The table's "busy cores" is the whole machine's mean CPU use while a policy ran.
* Capacity: one job runs alone on idle h3 first; its container time D (a half-core quota) makes
  its work 0.5 * D core-seconds. The cores left to jobs are the two cores less the hog's mean
  share over the arrivals (one core for half the arrival window: 0.5), so capacity = 1.5 cores /
  (0.5 * D) jobs per second, and jobs arrive as a seeded Poisson stream at ``--load`` of it
  (default 0.8; the gaps are rescaled so that the sample's rate is exactly that), so that
  several jobs run on each host at once.
* Background load: a hog container (a busy loop per core of its host, with twice a trainer's CPU
  weight, started directly on the host's engine, not through Airflow) runs on h1 in the first
  quarter of the arrival window and on h2 in the third; a policy has to follow the measurements,
  not learn a constant. A hog on h3 would cover both cores, where no placement could avoid it.
* Policies, one after another on the same topology, same arrivals and hog schedule: round-robin
  (job k pinned to host k mod 3) and seeded random (each job pinned to a host drawn from
  ``--seed``), which ignore utilisation, against ``least_loaded`` and the recommended packing
  policy ``fragmentation_balanced``, placing on the pool. A pinned job waits for its host when
  the host is full, as a pooled job waits for the pool. Between policies the pool drains and
  the hog is off.

A job's completion time (JCT) is from its submission to the end of its container, so Airflow's
scheduling delay and any wait for room are in it. The claim under test, about 20% less training
time than placement without utilisation, holds here when least_loaded's mean JCT is at most 0.80
of round-robin's.

    python -m bench.cluster [--jobs N] [--load F] [--seed S] [--epochs E] [--json PATH]

Needs root, dockerd, PostgreSQL, Redis, cgroup v1 with the cpuset controller, two CPUs, and the
images saved by ``images/build.sh``. The default run takes about 20-25 minutes.

``main(argv, cluster)`` runs on a topology that is already up (its DAG folder must hold
``bench/dags/cluster_job.py``) and leaves it up: the system tests run ``--jobs 2 --epochs 2``
as a smoke run on theirs (tests/system/cluster/test_bench_smoke.py). Its hosts are not pinned,
so its figures say nothing about placement; only a topology of this module's own is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from statistics import fmean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.cluster.topology import POOL, Cluster, ClusterSpec  # noqa: E402
from tools.dockerd import TESTBOX_IMAGE  # noqa: E402
from tools.local_airflow import AirflowRest  # noqa: E402
from tools.polling import eventually  # noqa: E402
from tools.run_example import raise_interrupt  # noqa: E402

DAG_ID = "bench_cluster_job"
DAGS = Path(__file__).resolve().parent / "dags"
CPUSETS = {"h1": "0", "h2": "1", "h3": "0,1"}
JOB_CPUS = 0.5
"""Each job's CPU quota and reservation: the half core that ``train_on_pool`` asks."""
CALIBRATION_HOST = "h3"
"""Its cpuset spans both cores, so the lone job is least disturbed by Airflow's own processes."""
HOG_CPU_SHARES = 2048
"""The hog's CPU weight, twice a container's default. The kernel shares a core between containers
by weight, not by their number of threads, so this (not more busy loops) makes the hog heavy:
beside one trainer it takes two thirds of its core and leaves the trainer a third, not its half."""
HOG_PLAN = ("h1", None, "h2", None)
"""The hog's host in each quarter of the arrival window (None: off)."""
POLICIES = ("round_robin", "random", "least_loaded", "fragmentation_balanced")
CLAIM = 0.80
"""least_loaded's mean JCT over round-robin's at or below this: about 20% less training time."""
BIN_S = 10.0
"""Seconds per character of the concurrency series: a 25-minute run fits on one line."""
RUN_TIMEOUT_S = 1800.0
"""A job not ended this long after the submissions is stuck, not slow."""
SETTLE_S = 5.0
"""After a drain, long enough for every agent to sample the idle hosts (they sample each second)."""


@dataclass
class Job:
    """One trainer run: where it was sent, when it arrived, where and when its container ran."""

    index: int
    offset_s: float
    pool: str
    policy: str
    run_id: str = ""
    arrival: float = 0.0
    state: str = ""
    host: str = ""
    started: float = 0.0
    finished: float = 0.0
    duration_s: float = 0.0

    @property
    def jct(self) -> float:
        return self.finished - self.arrival

    @property
    def wait(self) -> float:
        return self.started - self.arrival


def conf(job: Job, epochs: int) -> dict[str, Any]:
    """The DAG run's conf: the bench DAG takes the job's whole shape from it."""
    return {"pool": job.pool, "policy": job.policy, "cpus": JOB_CPUS, "epochs": epochs, "seed": job.index}


def submit(api: AirflowRest, job: Job, epochs: int) -> None:
    """Trigger the job's DAG run; it arrives when the request is sent, so the REST call is in its JCT."""
    job.arrival = time.time()
    job.run_id = api.trigger(DAG_ID, conf(job, epochs))


def collect(api: AirflowRest, job: Job) -> None:
    """Wait for the job's run to end; read where and when its container ran from the XCom."""
    job.state = api.wait_for_run(DAG_ID, job.run_id, timeout=RUN_TIMEOUT_S)
    if job.state == "success":
        out = api.xcom(DAG_ID, job.run_id, "train")
        job.host = str(out["host"]).removeprefix("gpu_")
        job.started = datetime.fromisoformat(out["started"]).timestamp()
        job.finished = datetime.fromisoformat(out["finished"]).timestamp()
        job.duration_s = float(out["duration_s"])


def placements(policy: str, count: int, hosts: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """The ``pool`` and ``policy`` of each job. Round-robin and random pin each job to one host
    connection (the registry has no round-robin, and its ``random`` draws from an unseeded
    generator in the operator; pins drawn here are the same in every invocation); on a pool of
    one host the policy has nothing to choose."""
    if policy == "round_robin":
        return [(f"gpu_{hosts[k % len(hosts)]}", "least_loaded") for k in range(count)]
    if policy == "random":
        rng = random.Random(f"hosts-{seed}")
        return [(f"gpu_{rng.choice(hosts)}", "least_loaded") for _ in range(count)]
    return [(POOL, policy)] * count


def arrivals(count: int, rate: float, seed: int) -> list[float]:
    """Arrival times of a seeded Poisson stream of ``count`` jobs at ``rate`` per second.

    The exponential gaps are rescaled so that the jobs arrive over exactly ``count / rate``
    seconds: a short sample's own rate strays far from the one asked (the default seed's 24 gaps
    add up to 14.5 means instead of 24, which would be 130% load, not 80%), and the load is what
    the benchmark claims to set. The burstiness within the window stays Poisson.
    """
    rng = random.Random(f"arrivals-{seed}")
    gaps = [rng.expovariate(1.0) for _ in range(count)]
    scale = count / (sum(gaps) * rate)
    return [sum(gaps[: k + 1]) * scale for k in range(count)]


def hog_schedule(window_s: float) -> list[tuple[float, float, str]]:
    """(start, end, host) of each hog phase: HOG_PLAN spread over the arrival window."""
    quarter = window_s / len(HOG_PLAN)
    return [(k * quarter, (k + 1) * quarter, h) for k, h in enumerate(HOG_PLAN) if h is not None]


def host_cores(host: str) -> int:
    """How many cores the host's containers (and a hog there) can use."""
    return len(CPUSETS[host].split(","))


class Hog:
    """The background load: a container with a busy loop per core, on one host's engine at a time."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.on: tuple[str, str] | None = None  # host and container id

    def switch(self, host: str | None) -> None:
        """Move the hog to ``host``, or end it (None)."""
        if self.on is not None:
            h, container = self.on
            with self.cluster.engines[h].client() as c:
                c.api.remove_container(container, force=True)
            self.on = None
        if host is not None:
            script = f"for i in $(seq {host_cores(host)}); do (while :; do :; done) & done; wait"
            with self.cluster.engines[host].client() as c:
                hog = c.containers.run(TESTBOX_IMAGE, ["sh", "-c", script], detach=True, network_mode="none",
                                       cpu_shares=HOG_CPU_SHARES)
            self.on = (host, str(hog.id))


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already in user and nice
    return total - fields[3] - fields[4], total


def wait_drained(cluster: Cluster, timeout: float = 180) -> None:
    """Wait until no engine holds a container (trainers, claims, holds), then let agents sample."""
    eventually(lambda: {h: len(e.containers()) for h, e in cluster.engines.items()}, timeout, interval_s=1,
               what="the pool drained (containers left per host)", until=lambda left: not any(left.values()))
    time.sleep(SETTLE_S)


def run_policy(cluster: Cluster, hog: Hog, policy: str, offsets: Sequence[float], epochs: int,
               seed: int) -> dict[str, Any]:
    """Submit the jobs at their offsets while the hog follows its schedule; wait for all."""
    plan = placements(policy, len(offsets), cluster.hosts, seed)
    jobs = [Job(k, t, pool, pol) for k, (t, (pool, pol)) in enumerate(zip(offsets, plan))]
    phases = hog_schedule(offsets[-1])
    events: list[tuple[float, int, Job | str | None]] = [(t, 1, job) for t, job in zip(offsets, jobs)]
    for start, end, h in phases:
        events += [(start, 0, h), (end, 0, None)]
    busy0, total0 = cpu_jiffies()
    t0 = time.time()
    for at, _, what in sorted(events, key=lambda e: (e[0], e[1])):
        time.sleep(max(0.0, t0 + at - time.time()))
        if isinstance(what, Job):
            submit(cluster.api, what, epochs)
        else:
            hog.switch(what)
    hog.switch(None)
    for job in jobs:
        collect(cluster.api, job)
    busy1, total1 = cpu_jiffies()
    end = max([j.finished for j in jobs if j.state == "success"], default=time.time())
    wait_drained(cluster)
    return {"t0": t0, "end": end, "jobs": jobs, "hog": [(t0 + s, t0 + e, h) for s, e, h in phases],
            "busy_cores": (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)}


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def running(jobs: Sequence[Job], host: str, at: float) -> int:
    """Jobs whose container ran on ``host`` at time ``at``."""
    return sum(1 for j in jobs if j.host == host and j.started <= at < j.finished)


def series(run: dict[str, Any], hosts: Sequence[str]) -> dict[str, str]:
    """One character per BIN_S: jobs running on each host at the middle of the bin, jobs
    arrived but not yet running (``wait``), and which host the hog was on (``hog``)."""
    jobs: list[Job] = run["jobs"]
    mids = [run["t0"] + (k + 0.5) * BIN_S for k in range(math.ceil((run["end"] - run["t0"]) / BIN_S))]

    def digit(n: int) -> str:
        return str(n) if n < 10 else "+"

    rows = {"hog": "".join(next((h[-1] for s, e, h in run["hog"] if s <= m < e), "-") for m in mids)}
    rows |= {h: "".join(digit(running(jobs, h, m)) for m in mids) for h in hosts}
    rows["wait"] = "".join(digit(sum(1 for j in jobs if j.arrival <= m < (j.started or math.inf))) for m in mids)
    return rows


def concurrency(jobs: Sequence[Job], host: str, span: float) -> tuple[float, int]:
    """Mean (over the policy's span) and maximum number of jobs running at once on ``host``."""
    mine = [j for j in jobs if j.host == host]
    peak = max((running(mine, host, j.started) for j in mine), default=0)
    return sum(j.finished - j.started for j in mine) / span, peak


def summarise(runs: dict[str, dict[str, Any]], hosts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each policy's figures over its successful jobs, with its ratios to the two blind baselines."""
    out: dict[str, dict[str, Any]] = {}
    for policy, run in runs.items():
        done = [j for j in run["jobs"] if j.state == "success"]
        jct = [j.jct for j in done]
        span = run["end"] - run["t0"]
        out[policy] = {
            "failed": len(run["jobs"]) - len(done),
            "mean_jct_s": fmean(jct) if jct else math.nan, "p95_jct_s": p95(jct) if jct else math.nan,
            "mean_wait_s": fmean(j.wait for j in done) if done else math.nan,
            "mean_run_s": fmean(j.duration_s for j in done) if done else math.nan,
            "jobs_per_host": {h: sum(1 for j in done if j.host == h) for h in hosts},
            "concurrency": {h: dict(zip(("mean", "max"), concurrency(done, h, span))) for h in hosts},
            "busy_cores": run["busy_cores"],
            "series": series(run, hosts),
        }
    for policy, s in out.items():
        s["vs_round_robin"] = s["mean_jct_s"] / out["round_robin"]["mean_jct_s"]
        s["vs_random"] = s["mean_jct_s"] / out["random"]["mean_jct_s"]
    return out


def report(summary: dict[str, dict[str, Any]], hosts: Sequence[str]) -> None:
    """Print the tables and whether the claim holds (a finding, not a failure of the run)."""
    print(f"\n{'policy':<23} {'mean JCT':>8} {'p95 JCT':>8} {'wait':>6} {'run':>6} {'vs RR':>6} {'vs rnd':>6}"
          f" {'jobs ' + '/'.join(hosts):>14} {'busy cores':>10}")
    for policy, s in summary.items():
        per_host = "/".join(str(s["jobs_per_host"][h]) for h in hosts)
        print(f"{policy:<23} {s['mean_jct_s']:>7.1f}s {s['p95_jct_s']:>7.1f}s {s['mean_wait_s']:>5.1f}s "
              f"{s['mean_run_s']:>5.1f}s {s['vs_round_robin']:>6.2f} {s['vs_random']:>6.2f} {per_host:>14} "
              f"{s['busy_cores']:>10.2f}" + (f"  ({s['failed']} FAILED)" if s["failed"] else ""))
    print("(wait: submission to container start; run: container time; busy cores: whole machine, Airflow included)")
    print(f"\nJobs running at once per host, mean / max over each policy's run; then one character per "
          f"{BIN_S:.0f} s: jobs running on each host, jobs waiting to start, and the hog's host:")
    for policy, s in summary.items():
        c = s["concurrency"]
        print(f"{policy}: " + ", ".join(f"{h} {c[h]['mean']:.1f} / {c[h]['max']}" for h in hosts))
        for row, chars in s["series"].items():
            print(f"  {row:<5} {chars}")
    ratio = summary["least_loaded"]["vs_round_robin"]
    print(f"\nleast_loaded / round_robin mean JCT: {ratio:.2f} ({abs(1 - ratio):.0%} "
          f"{'less' if ratio <= 1 else 'more'}); / random: {summary['least_loaded']['vs_random']:.2f}. "
          f"The claim of about {1 - CLAIM:.0%} less training time than placement without utilisation "
          f"{'holds' if ratio <= CLAIM else 'does NOT hold'} under concurrency.")


def main(argv: list[str], cluster: Cluster | None = None) -> int:
    """Run the benchmark on a topology of its own, or on ``cluster``, which is up and stays up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24, help="trainer runs per policy (default 24)")
    parser.add_argument("--load", type=float, default=0.8, help="arrival rate as a share of capacity (default 0.8)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the arrivals and of the random pins")
    parser.add_argument("--epochs", type=int, default=400, help="trainer epochs per job (default 400)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        sys.exit("The hosts are pinned to CPUs 0 and 1: this benchmark needs two CPUs.")
    if args.jobs < 2 or not 0 < args.load:
        sys.exit("--jobs must be at least 2 and --load above 0.")
    own = cluster is None
    if own:
        signal.signal(signal.SIGTERM, raise_interrupt)
    began = time.monotonic()
    if cluster is None:
        cluster = Cluster(ClusterSpec(tag="gdb", host_cpus=CPUSETS), dags_folder=DAGS)
    hog = Hog(cluster)
    try:
        if own:
            print("Starting the topology (PostgreSQL, Redis, Airflow, 3 Celery workers, 3 GPU hosts) ...", flush=True)
            cluster.start()
        print(cluster.describe())
        print("cpusets: " + (", ".join(f"{h} -> CPU {c}" for h, c in cluster.spec.host_cpus.items()) or "none"),
              flush=True)
        lone = Job(0, 0.0, f"gpu_{CALIBRATION_HOST}", "least_loaded")
        submit(cluster.api, lone, args.epochs)
        collect(cluster.api, lone)
        if lone.state != "success":
            raise RuntimeError(f"the calibration job failed; see {cluster.procs.log_dir}")
        wait_drained(cluster)
        cores = len({c for cs in CPUSETS.values() for c in cs.split(",")})
        # Hog phases are fixed shares of the arrival window, so its mean cores do not depend on the rate.
        hog_share = sum((e - s) * host_cores(h) for s, e, h in hog_schedule(1.0))
        work = JOB_CPUS * lone.duration_s
        capacity = (cores - hog_share) / work
        rate = args.load * capacity
        offsets = arrivals(args.jobs, rate, args.seed)
        print(f"One job alone on idle {CALIBRATION_HOST}: container {lone.duration_s:.1f} s at a {JOB_CPUS} CPU quota "
              f"({work:.1f} core-s), JCT {lone.jct:.1f} s. Capacity: {cores} cores less the hog's mean "
              f"{hog_share:.2f} = {cores - hog_share:.2f} cores / {work:.1f} core-s = {capacity * 60:.2f} jobs/min; "
              f"arrivals at {args.load:.0%}: {rate * 60:.2f} jobs/min (one per {1 / rate:.1f} s on average), "
              f"{args.jobs} jobs over {offsets[-1]:.0f} s per policy.", flush=True)
        runs: dict[str, dict[str, Any]] = {}
        for policy in POLICIES:
            started = time.monotonic()
            runs[policy] = run_policy(cluster, hog, policy, offsets, args.epochs, args.seed)
            jct = [j.jct for j in runs[policy]["jobs"] if j.state == "success"]
            print(f"{policy}: mean JCT {fmean(jct) if jct else math.nan:.1f} s, "
                  f"{time.monotonic() - started:.0f} s with the drain", flush=True)
    except KeyboardInterrupt:
        print("Interrupted.")
        return 130
    finally:
        if own:
            print("Stopping the topology ...", flush=True)
            cluster.stop()  # its engines' cgroups too, in every controller
        else:
            hog.switch(None)  # gone already unless the run was cut short
    summary = summarise(runs, cluster.hosts)
    report(summary, cluster.hosts)
    print(f"Whole run{', topology start and stop included' if own else ''}: {(time.monotonic() - began) / 60:.1f} min")
    if args.json:
        doc = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "cpusets": dict(cluster.spec.host_cpus), "job_cpus": JOB_CPUS, "hog_cpu_shares": HOG_CPU_SHARES,
               "calibration": asdict(lone), "capacity_jobs_per_s": capacity, "rate_jobs_per_s": rate,
               "offsets_s": offsets, "summary": summary,
               "runs": {p: {"t0": r["t0"], "hog": r["hog"], "jobs": [asdict(j) for j in r["jobs"]]}
                        for p, r in runs.items()}}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(s["failed"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
