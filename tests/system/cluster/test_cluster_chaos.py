"""Chaos on the distributed topology: workers lost, the scheduler and the api-server restarted, mid-run.

20 counting tasks (tests/system/dags/chaos_counter.py) of 20 to 40 s each run on the package's
topology while, every 15 s, a Celery worker chosen at random loses every process it ran (the
worker, its pool, the task supervisors and the task processes die at once with SIGKILL, as
when its machine is lost) and starts again; the scheduler and the api-server are each
restarted once meanwhile. Nothing hides the loss: the broker keeps a lost worker's messages
unacknowledged for two days (``VISIBILITY_TIMEOUT_S``), so it is Airflow that fails a lost try
once it misses heartbeats (conftest.py) and runs the next, which adopts the container the lost
try left on its GPU host.

The run must end with every task a success, one container per task across every host and try
(the engines' event streams), each archive holding the whole output, every number once and in
order, with the manifest's digest, under the try that started the container, and nothing of
the run left on any engine. A retry *collected after exit* found its container exited already:
the engine's die event is earlier than the start of the try that returned. Counts are printed.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.error
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import pytest

from provider.labels import CLAIM_LABEL, HOLD_LABEL, LOCK_LABEL
from provider.task_instance import RUN_ID_LABEL
from tests.conftest import NotWithin, archived_stdout, eventually, settled
from tests.system.cluster.observe import EngineEvents, Started, archive_objects, overbooked
from tools.cluster.topology import POOL, Cluster

pytestmark = pytest.mark.system

DAG_ID = "gpu_chaos_counter"
TASK_ID = "count"
TASKS = 20
SEED = 1507
KILL_EVERY_S = 15.0
RESTARTS = ((22.0, "scheduler"), (52.0, "api-server"))
"""Seconds after the trigger at which each is restarted: between two kills."""
DEADLINE_S = 480.0
SWEPT_WITHIN_S = 120.0
"""The issue's bound on an orphan's life; the sweep runs every 30 s."""


@dataclass(frozen=True)
class Kill:
    """One lost worker: when (seconds after the trigger), which, and what it ran."""

    at_s: float
    worker: str
    running: tuple[int, ...]
    """The map indexes Airflow had running on the worker just before."""


@dataclass(frozen=True)
class Restart:
    """One restart of a control component, and how long it was away."""

    at_s: float
    component: str
    away_s: float


@dataclass
class Chaos:
    """What was done to the topology during a run, and how the run ended."""

    kills: list[Kill] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    state: str = ""
    duration_s: float = 0.0


def counting_runs(rng: random.Random) -> list[dict[str, Any]]:
    """One count per task: a line every 50 to 100 ms for 20 to 40 s; every fourth on a whole
    GPU, the others on half of one."""
    runs = []
    for k in range(TASKS):
        interval_s = round(rng.uniform(0.05, 0.1), 3)
        runs.append({"lines": round(rng.uniform(20, 40) / interval_s), "interval_s": interval_s,
                     "gpu_milli": 1000 if k % 4 == 0 else 500})
    return runs


def run_state(cluster: Cluster, run_id: str) -> str:
    return str(cluster.api.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"])


def logged(cluster: Cluster, run_id: str, event: str) -> int:
    """How many times Airflow's event log recorded ``event`` for the run."""
    query = urllib.parse.urlencode({"dag_id": DAG_ID, "run_id": run_id, "event": event, "limit": 1})
    return int(cluster.api.request("GET", f"/api/v2/eventLogs?{query}")["total_entries"])


def run_with_chaos(cluster: Cluster, run_id: str, rng: random.Random) -> Chaos:
    """Kill a random worker every ``KILL_EVERY_S`` and restart the components of ``RESTARTS``
    at their times, until the run ends."""
    chaos = Chaos()
    began = time.monotonic()
    restarts = list(RESTARTS)
    next_kill = KILL_EVERY_S

    def step() -> tuple[str, Chaos]:
        """The run's state; while it runs, the chaos that is due."""
        nonlocal next_kill
        state = run_state(cluster, run_id)
        if state in ("success", "failed"):
            return state, chaos
        elapsed = time.monotonic() - began
        cluster.procs.check_alive()
        if restarts and elapsed >= restarts[0][0]:
            _, component = restarts.pop(0)
            chaos.restarts.append(Restart(round(elapsed, 1), component, round(cluster.restart_control(component), 1)))
        elif elapsed >= next_kill:
            victim = rng.choice(cluster.workers)
            running = tuple(int(ti["map_index"]) for ti in cluster.api.mapped_instances(DAG_ID, run_id, TASK_ID)
                            if ti["state"] == "running" and ti.get("hostname") == victim)
            cluster.crash_worker(victim)
            chaos.kills.append(Kill(round(elapsed, 1), victim, running))
            next_kill = elapsed + KILL_EVERY_S
        return state, chaos

    state, _ = eventually(step, DEADLINE_S, interval_s=0.5, what=f"run {run_id} ended (state, chaos so far)",
                          until=lambda seen: seen[0] in ("success", "failed"))
    chaos.state, chaos.duration_s = state, time.monotonic() - began
    return chaos


def containers_of(events: EngineEvents, run_id: str, timeout: float = 30) -> list[Started]:
    """The run's task containers once every one has died (each died before its task returned;
    the engine's die event may reach the stream a moment after the run ends)."""
    try:
        return eventually(lambda: events.of_run(run_id), timeout, interval_s=0.5, what="every task container died",
                          until=lambda seen: all(s.die_ns is not None for s in seen))
    except NotWithin as late:
        return cast("list[Started]", late.last)


def died_before(started: Started, iso_time: str) -> bool:
    """Whether the engine saw the container die before ``iso_time`` (an Airflow timestamp)."""
    return started.die_ns is not None and started.die_ns / 1e9 < datetime.fromisoformat(iso_time).timestamp()


def told_by_tries(cluster: Cluster, run_id: str, k: int, tries: int, seen: list[Started]) -> str:
    """The engines' account of task ``k``'s containers and what each of its tries logged, but the
    counted lines: the evidence a failure shows when a task got more than one container."""
    told = [f"task {k}, {tries} tries; containers: {[s for s in seen if s.map_index == k]}"]
    for n in range(1, tries + 1):
        try:
            text = cluster.api.task_log_text(DAG_ID, run_id, TASK_ID, try_number=n, map_index=k)
        except urllib.error.HTTPError as exc:
            text = f"(no log: {exc})"
        told += [f"try {n}: {line[:400]}" for line in text.splitlines() if not line.split('"event":"')[-1][:1].isdigit()]
    return "\n".join(told)


def test_lost_workers_and_restarts_lose_no_task_line_or_reservation(
    cluster: Cluster, events: EngineEvents, report: Callable[[str], None]
) -> None:
    rng = random.Random(SEED)
    runs = counting_runs(rng)
    run_id = cluster.api.trigger(DAG_ID, {"pool": POOL, "runs": runs})
    chaos = run_with_chaos(cluster, run_id, rng)

    instances = cluster.api.mapped_instances(DAG_ID, run_id, TASK_ID)
    outcomes = [cluster.api.xcom(DAG_ID, run_id, TASK_ID, map_index=k) if ti["state"] == "success" else {}
                for k, ti in enumerate(instances)]
    seen = containers_of(events, run_id)
    # The container each task's result came from: the one its XCom says which try started.
    used = {s.map_index: s for s in seen if s.try_number == outcomes[s.map_index].get("started_by_try")}
    reattached = [k for k, o in enumerate(outcomes) if o.get("reattached")]
    collected = [k for k in reattached if k in used and died_before(used[k], instances[k]["start_date"])]
    afresh = [k for k, o in enumerate(outcomes) if o and not o["reattached"] and instances[k]["try_number"] > 1]
    report("\n".join([
        f"chaos: {TASKS} tasks, seed {SEED}, run {chaos.state} {chaos.duration_s:.0f} s after the trigger",
        f"kills: {len(chaos.kills)}, of tries running there: {sum(len(k.running) for k in chaos.kills)} "
        f"({', '.join(f'{k.worker}@{k.at_s:.0f}s:{len(k.running)}' for k in chaos.kills)})",
        f"tries retried: {sum(ti['try_number'] - 1 for ti in instances)} (heartbeat timeouts "
        f"{logged(cluster, run_id, 'heartbeat timeout')}, requeued from queued "
        f"{logged(cluster, run_id, 'stuck in queued reschedule')})",
        f"reattached: {len(reattached)} (to a running container {len(reattached) - len(collected)}, "
        f"collected after exit {len(collected)}); a retry started the container: {len(afresh)}; "
        f"containers: {len(seen)} for {TASKS} tasks",
        "restarts: " + "; ".join(f"{r.component} at {r.at_s:.0f} s, away {r.away_s:.1f} s" for r in chaos.restarts),
    ]))
    locks = {h: len(e.containers(LOCK_LABEL)) for h, e in cluster.engines.items()}
    if any(locks.values()):
        report(f"claim locks present at the end (a lost claimant's lapses after 150 s): {locks}")

    assert chaos.state == "success", [(ti["map_index"], ti["state"], ti["try_number"]) for ti in instances]
    assert [ti["state"] for ti in instances] == ["success"] * TASKS
    assert [r.component for r in chaos.restarts] == [c for _, c in RESTARTS]
    assert reattached, "no retry adopted a container: the kills hit no running task"
    cluster.procs.check_alive()

    # Every check is made and every failure named at once: a run takes minutes.
    problems: list[str] = []

    # One container per task, across every host and try, by the engines' own account; each ran
    # to its end (exit 0, nobody stopped it) and none took more of a GPU than was free.
    starts = Counter(s.map_index for s in seen)
    problems += [told_by_tries(cluster, run_id, k, instances[k]["try_number"], seen)
                 for k in range(TASKS) if starts[k] != 1]
    problems += [f"task {s.map_index}: container {s.container[:12]} exited {s.exit_code}" for s in seen
                 if s.exit_code != 0]
    problems += [f"GPU overbooked: {o}" for o in overbooked(seen)]
    problems += [f"task {k}: reattached={o['reattached']}, container started by try {o['started_by_try']}, "
                 f"returned by try {ti['try_number']}" for k, (ti, o) in enumerate(zip(instances, outcomes))
                 if o["reattached"] != (o["started_by_try"] < ti["try_number"]) or k not in used]

    # Each archive is whole: every number once and in order, hashing to the manifest's digest,
    # in one archive under the try that started the container.
    for k, (run, out) in enumerate(zip(runs, outcomes)):
        expected = [b"%d" % n for n in range(1, run["lines"] + 1)]
        prefix = f"dag_id={DAG_ID}/run_id={run_id}/task_id={TASK_ID}/map_index={k}/"
        objects = archive_objects(cluster, prefix)
        attempt = f"{prefix}attempt={out['started_by_try']}"
        archives = sorted({key.rsplit("/", 1)[0] for key in objects})
        if archives != [attempt]:
            problems.append(f"task {k}: archives {archives}, expected only {attempt}")
        kept = {key: data for key, data in objects.items() if key.startswith(attempt + "/")}
        stdout = archived_stdout(kept)
        if stdout != expected:
            problems.append(f"task {k}: {len(stdout)} lines archived ({len(set(stdout))} distinct), "
                            f"not 1 to {len(expected)} once each in order")
        manifest = json.loads(kept.get(f"{attempt}/manifest.json", b"{}"))
        digest = hashlib.sha256(b"".join(line + b"\n" for line in expected)).hexdigest()
        if not manifest.get("sha256") == digest == out["log_sha256"]:
            problems.append(f"task {k}: sha256 expected {digest}, manifest {manifest.get('sha256')}, "
                            f"XCom {out['log_sha256']}")
        if manifest.get("chunks_lost") != [] or not out["log_archive_complete"]:
            problems.append(f"task {k}: archive incomplete: {manifest.get('chunks_lost')}")

    # Nothing of the run is left on any engine: no task container, claim or hold. A worker lost
    # after Airflow recorded a success and before its callback removed the container leaves it
    # to the orphan sweep (every 30 s): that is waited for.
    for h, engine in cluster.engines.items():
        left = settled(lambda: engine.containers(f"{RUN_ID_LABEL}={run_id}") + engine.containers(CLAIM_LABEL)
                       + engine.containers(HOLD_LABEL), timeout_s=SWEPT_WITHIN_S)
        problems += [f"left on {h}: {c['Names']} {c['State']} {c['Labels']}" for c in left]

    assert not problems, "\n\n".join(problems)
