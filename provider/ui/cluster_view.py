"""The GPU cluster page's document, built from plain values: no Airflow, no Docker, no clock.

:mod:`provider.ui.cluster_sources` reads the pool through the one pool reader
(:func:`provider.reservations.pool.read_pool_view`, looking only) and Airflow's metadata; this
module turns what was read into the JSON the page renders. Keeping the shaping pure means every rule the page shows (who holds a GPU, which
claim is stale, what a user may see of another team's DAG, where a link points) is a
function of its inputs, tested without a running cluster.

What a user may see: hosts, GPUs and their load are shown to everyone who may open the page;
which task instance holds a GPU is shown only for DAGs the user may read. A GPU held by any
other DAG is shown as held, without naming the DAG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from provider.clients.hosts import POOL_CONN_TYPE
from provider.reservations.rules import Claim, HoldRecord, PlaceInLine
from provider.task_instance import TaskInstanceRef
from provider.reservations.view import HostView, PoolView
from provider.scheduling.model import MILLI_PER_GPU, GpuState
from provider.scheduling.queues import RESOURCES, UNITS, Amounts, QueueSetup, order

WAITING_STATES = ("deferred", "up_for_reschedule")
"""Task-instance states in which a task waits for GPUs without holding a worker slot."""

WAITING_OPERATORS = ("GpuDockerOperator", "GpuAvailableSensor")
"""Operator class names whose waiting task instances the page lists."""


@dataclass(frozen=True, slots=True)
class HeldClaim:
    """A claim read from a host; ``stale`` marks one whose task no longer runs, which the next
    placement reclaims (the page itself removes nothing)."""

    claim: Claim
    stale: bool


@dataclass(frozen=True, slots=True)
class WaitingTask:
    """A task instance that waits for GPUs (deferred, or a sensor between pokes)."""

    task: TaskInstanceRef
    state: str
    operator: str
    since: datetime | None


ENV_PREFIX = "AIRFLOW_CONN_"


def pool_ids_in_environment(environ: Mapping[str, str]) -> list[str]:
    """Ids of the ``gpu_docker_pool`` connections defined as ``AIRFLOW_CONN_*`` variables.

    Airflow looks such a connection up as ``AIRFLOW_CONN_{ID.upper()}``, so the id is the
    variable's suffix in lower case. The value is JSON (``{"conn_type": ...}``) or a URI whose
    scheme is the type with ``-`` for ``_`` (``gpu-docker-pool://?hosts=...``).
    """
    found = []
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and _conn_type(value) == POOL_CONN_TYPE:
            found.append(key[len(ENV_PREFIX):].lower())
    return sorted(found)


def _conn_type(value: str) -> str | None:
    text = value.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        kind = doc.get("conn_type") if isinstance(doc, dict) else None
        return kind if isinstance(kind, str) else None
    return urlsplit(text).scheme.replace("-", "_") or None


def merged_pool_ids(*sources: Iterable[str]) -> list[str]:
    """Pool ids from several sources, each once, in the order first seen."""
    return list(dict.fromkeys(i for source in sources for i in source if i))


def held_claims(view: HostView) -> tuple[HeldClaim, ...]:
    """The host's claims, counted and stale, by first GPU and age: exactly the claims the next
    placement would count or reclaim."""
    held = [HeldClaim(c, False) for c in view.claims] + [HeldClaim(c, True) for c in view.stale]
    return tuple(sorted(held, key=lambda h: (min(h.claim.gpus, default=-1), h.claim.created or 0.0)))


def task_instance_path(base_path: str, task: TaskInstanceRef) -> str:
    """Where the Airflow UI shows ``task``: ``/dags/D/runs/R/tasks/T[/mapped/I]``.

    Every part is percent-encoded: run ids carry ``:`` and ``+`` (``manual__2026-...+00:00``).
    """
    parts = ["dags", task.dag_id, "runs", task.run_id, "tasks", task.task_id]
    if task.map_index >= 0:
        parts += ["mapped", str(task.map_index)]
    return base_path.rstrip("/") + "/" + "/".join(quote(p, safe="") for p in parts)


def task_document(task: TaskInstanceRef, base_path: str) -> dict[str, Any]:
    """A task instance as the page links it."""
    return {
        "dag_id": task.dag_id,
        "task_id": task.task_id,
        "run_id": task.run_id,
        "map_index": task.map_index,
        "try_number": task.try_number,
        "url": task_instance_path(base_path, task),
    }


def named_task(task: TaskInstanceRef | None, readable: Callable[[str], bool], base_path: str) -> dict[str, Any]:
    """``task`` and ``hidden`` of a holder: the task is named only when its DAG is readable."""
    if task is None:
        return {"task": None, "hidden": False}
    if readable(task.dag_id):
        return {"task": task_document(task, base_path), "hidden": False}
    return {"task": None, "hidden": True}


def holder_document(held: HeldClaim, readable: Callable[[str], bool], base_path: str) -> dict[str, Any]:
    """Who holds (a share of) a GPU."""
    return {"milli": held.claim.milli, "stale": held.stale, **named_task(held.claim.task, readable, base_path)}


def hold_document(record: HoldRecord, readable: Callable[[str], bool], base_path: str) -> dict[str, Any]:
    """For whom a host is held, since and until when."""
    return {**named_task(record.task, readable, base_path), "since": _iso(record.hold.since),
            "expires": _iso(record.expires)}


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat()


def gpu_document(
    gpu: GpuState, claims: Sequence[HeldClaim], readable: Callable[[str], bool], base_path: str
) -> dict[str, Any]:
    """One GPU row: measured load, reserved share, and the task instances holding it."""
    mine = [h for h in claims if gpu.index in h.claim.gpus]
    return {
        "index": gpu.index,
        "model": gpu.model,
        "utilization_pct": round(gpu.utilization_pct, 1),
        "memory_used_mb": gpu.memory_used_mb,
        "memory_total_mb": gpu.memory_total_mb,
        "reserved_milli": min(MILLI_PER_GPU, sum(h.claim.milli for h in mine)),
        "holders": [holder_document(h, readable, base_path) for h in mine],
    }


def host_document(
    view: HostView, pools: Sequence[str], readable: Callable[[str], bool], base_path: str
) -> dict[str, Any]:
    """One host card: reachable or why not, CPU and memory use and reservations, a row per GPU."""
    node = view.measured
    doc: dict[str, Any] = {
        "name": node.name,
        "pools": list(pools),
        "labels": dict(node.labels),
        "reachable": node.unreachable is None and view.engine_problem is None,
        "problem": node.unreachable or view.engine_problem or node.unmeasured,
        "cpu": None,
        "memory": None,
        "gpus": [],
        "holds": [hold_document(h, readable, base_path) for h in sorted(view.holds, key=lambda h: h.hold.since)],
    }
    if node.unreachable is not None or node.unmeasured is not None:
        return doc
    available = node.memory_available_mb if node.memory_available_mb is not None else node.memory_mb
    doc["cpu"] = {"count": round(node.cpu_milli / 1000, 2),  # cores; a fraction under a cgroup quota
                  "utilization_pct": round(node.cpu_utilization_pct, 1),
                  "reserved_milli": view.node.cpu_allocated_milli}
    doc["memory"] = {"used_mb": max(0, node.memory_mb - available), "total_mb": node.memory_mb,
                     "reserved_mb": view.node.memory_allocated_mb}
    held = held_claims(view)
    doc["gpus"] = [gpu_document(g, held, readable, base_path) for g in node.gpus]
    return doc


def waiting_document(waiting: WaitingTask, base_path: str) -> dict[str, Any]:
    """One row of the "Waiting tasks" table."""
    return {
        **task_document(waiting.task, base_path),
        "state": waiting.state,
        "operator": waiting.operator,
        "since": waiting.since.isoformat() if waiting.since else None,
    }


def pools_of_hosts(pools: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """For each host, the pools it belongs to, in pool order: hosts are read once each."""
    by_host: dict[str, list[str]] = {}
    for pool, hosts in pools.items():
        for host in hosts:
            by_host.setdefault(host, [])
            if pool not in by_host[host]:
                by_host[host].append(pool)
    return by_host


def cluster_document(
    *,
    pools: Mapping[str, Sequence[str]],
    readings: Sequence[HostView],
    waiting: Sequence[WaitingTask],
    problems: Sequence[str],
    readable: Callable[[str], bool],
    base_path: str,
    generated_at: datetime,
    queues: Mapping[str, QueueSetup] | None = None,
) -> dict[str, Any]:
    """The whole page: pools (with their queues), one card per host, waiting tasks, and
    configuration problems.

    ``waiting`` must already be limited to DAGs the user may read (the query does that).
    """
    member = pools_of_hosts(pools)
    by_name = {r.measured.name: r for r in readings}

    def pool_doc(name: str, hosts: Sequence[str]) -> dict[str, Any]:
        setup = (queues or {}).get(name)
        doc: dict[str, Any] = {"name": name, "hosts": list(hosts), "queues": None}
        if setup is not None:
            view = PoolView(tuple(by_name[h] for h in hosts if h in by_name))
            doc["queues"] = queues_document(name, setup, view, readable, base_path)
        return doc

    return {
        "generated_at": generated_at.isoformat(),
        "pools": [pool_doc(p, h) for p, h in pools.items()],
        "hosts": [host_document(r, member.get(r.measured.name, []), readable, base_path) for r in readings],
        "waiting": [waiting_document(w, base_path) for w in waiting],
        "problems": list(problems),
    }


def _in_units(amounts: Amounts) -> dict[str, float]:
    """Amounts in the units a pool connection writes them (GPUs, CPUs, MB)."""
    factor = {resource: (key, f) for key, (resource, f) in UNITS.items()}
    return {factor[r][0]: v / factor[r][1] for r, v in zip(RESOURCES, amounts.values())}


def queues_document(pool: str, setup: QueueSetup, view: PoolView, readable: Callable[[str], bool],
                    base_path: str) -> dict[str, Any]:
    """A pool's queues: each one's quota, use, what it borrows beyond its quota and what of its
    idle quota the others use (its *lent*: the cohort's borrowing shared among the queues with
    idle quota, in proportion to it), and every waiting task in the order they will start."""
    usage = view.queue_usage()
    used = {q: usage.get(q, Amounts()) for q in setup}
    quota = {q: Amounts(*(setup[q].quota.get(r, 0) for r in RESOURCES)) for q in setup}
    borrowed = {q: Amounts(*(max(0, u - c) if setup[q].governs(r) else 0
                             for r, u, c in zip(RESOURCES, used[q].values(), quota[q].values()))) for q in setup}
    idle = {q: Amounts(*(max(0, min(setup[q].lendable(r), c - u)) if setup[q].governs(r) else 0
                         for r, u, c in zip(RESOURCES, used[q].values(), quota[q].values()))) for q in setup}
    total_borrowed = sum(borrowed.values(), Amounts())
    total_idle = sum(idle.values(), Amounts())
    lent = {q: Amounts(*(round(b * i / t) if t else 0 for b, i, t in
                         zip(total_borrowed.values(), idle[q].values(), total_idle.values()))) for q in setup}
    places = {p.waiting.owner: p for p in view.line if p.pool == pool and p.waiting.queue in setup}
    line = order([p.waiting for p in places.values()], usage, setup)
    return {
        "queues": [{"name": q, "weight": setup[q].weight, "quota": _in_units(quota[q]), "used": _in_units(used[q]),
                    "borrowed": _in_units(borrowed[q]), "lent": _in_units(lent[q]),
                    "waiting": sum(1 for w in line if w.queue == q)} for q in setup],
        "line": [place_document(places[w.owner], i, readable, base_path) for i, w in enumerate(line, 1)],
    }


def place_document(place: PlaceInLine, position: int, readable: Callable[[str], bool], base_path: str) -> dict[str, Any]:
    """One waiting task of a pool with queues, at its ``position`` in line."""
    return {"position": position, "queue": place.waiting.queue, "priority": place.waiting.priority,
            "since": _iso(place.waiting.since), "asks": place.request.describe(),
            **named_task(place.task, readable, base_path)}
