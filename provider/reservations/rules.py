"""Pure rules of reservations: what a claim records, a host's allocation, staleness, holds.

A **claim** reserves, for one task on one host, GPU ids with the milli-GPUs taken on each,
milli-CPUs and memory: a :class:`~provider.scheduling.Resources` vector on named GPUs. A host's
allocation is the fold of its claims, oldest first, through :func:`provider.scheduling.apply`:
the same function the trace simulator folds its placements through, so what the benchmark
measures is the accounting production runs. A claim that the fold cannot take (placement's own
capacity check, :func:`provider.scheduling.shortfalls`, finds a GPU, the CPUs or the memory
short) is *refused*: it counts for nothing, and its claimant, which verifies after creating
it, takes it back.

Everything here is a function of plain values (container summaries as the engine lists them,
a clock reading passed in), so every rule is unit-tested without an engine. The I/O lives in
:mod:`provider.reservations.store` and :mod:`provider.reservations.pool`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any
import json
import math

from provider.labels import (
    CLAIM_CPU_LABEL,
    CLAIM_GPUS_LABEL,
    CLAIM_LABEL,
    CLAIM_MEMORY_LABEL,
    CLAIM_MILLI_LABEL,
    CLAIM_PREFIX,
    CLAIM_QUEUE_LABEL,
    CREATED_LABEL,
    HOLD_EXPIRES_LABEL,
    HOLD_LABEL,
    HOLD_OWNER_LABEL,
    HOLD_PREFIX,
    HOLD_SINCE_LABEL,
    OWNER_LABEL,
    PROBLEM_EXPIRES_LABEL,
    PROBLEM_LABEL,
    PROBLEM_OWNER,
    RESERVATION_LABEL,
    WAIT_EXPIRES_LABEL,
    WAIT_LABEL,
    WAIT_POOL_LABEL,
    WAIT_PREFIX,
    WAIT_PRIORITY_LABEL,
    WAIT_QUEUE_LABEL,
    WAIT_REQUEST_LABEL,
    WAIT_SINCE_LABEL,
)
from provider.scheduling.accounting import MEASURE_WINDOW_S, apply, with_unseen
from provider.scheduling.capacity import shortfalls
from provider.scheduling.model import NodeState, PlacementRequest, Resources
from provider.scheduling.queues import Amounts, Waiting
from provider.scheduling.reasons import Reason
from provider.scheduling.waiting import Hold
from provider.task_instance import TaskInstanceRef


@dataclass(frozen=True, slots=True)
class Claim:
    """What one task reserves on one host, as read back from the host's engine.

    ``milli`` is taken on *each* GPU of ``gpus`` (1000 for whole GPUs, less for a share).
    """

    container_id: str
    owner: str
    gpus: tuple[int, ...]
    milli: int
    cpu_milli: int
    memory_mb: int
    created: float
    task: TaskInstanceRef | None = None
    queue: str | None = None
    """The queue it counts against; None on a pool without queues."""

    @property
    def resources(self) -> Resources:
        """What the claim takes, as the vector the accounting folds (on ``gpus``)."""
        return Resources(gpus=len(self.gpus), gpu_milli=self.milli, cpu_milli=self.cpu_milli, memory_mb=self.memory_mb)


def reserves_anything(request: PlacementRequest) -> bool:
    """Whether a request takes anything a claim records (a task asking for nothing claims nothing)."""
    return bool(request.gpus or request.cpu_milli or request.memory_mb)


def claim_name(owner: str) -> str:
    """One claim per task and host: a second create by the same owner is refused (409)."""
    return f"{CLAIM_PREFIX}{owner}"


def claim_labels(
    taken: Resources, gpu_ids: Sequence[int], owner: str, created: float, task: TaskInstanceRef | None,
    queue: str | None = None,
) -> dict[str, str]:
    """Labels of a claim container: its task instance plus everything the claim reserves, and
    the queue it counts against."""
    return {
        **({CLAIM_QUEUE_LABEL: queue} if queue is not None else {}),
        **(task.to_labels() if task is not None else {}),
        RESERVATION_LABEL: "claim",
        CLAIM_LABEL: "true",
        OWNER_LABEL: owner,
        CLAIM_GPUS_LABEL: ",".join(str(i) for i in sorted(gpu_ids)),
        CLAIM_MILLI_LABEL: str(taken.gpu_milli),
        CLAIM_CPU_LABEL: str(taken.cpu_milli),
        CLAIM_MEMORY_LABEL: str(taken.memory_mb),
        CREATED_LABEL: f"{created:.3f}",
    }


def parse_claim(summary: Mapping[str, Any]) -> Claim | None:
    """A claim from one entry of the engine's container list; None for anything else.

    A container whose claim labels are malformed is not a claim this provider made, and
    counting it could block a host forever, so it is ignored rather than guessed at.
    """
    labels = summary.get("Labels") or {}
    if labels.get(CLAIM_LABEL) != "true":
        return None
    try:
        text = labels[CLAIM_GPUS_LABEL]
        gpus = tuple(int(i) for i in text.split(",")) if text else ()
        milli, cpu, memory = (int(labels[k]) for k in (CLAIM_MILLI_LABEL, CLAIM_CPU_LABEL, CLAIM_MEMORY_LABEL))
        Resources(gpus=len(gpus), gpu_milli=milli, cpu_milli=cpu, memory_mb=memory)  # no request has these: not ours
        return Claim(
            container_id=str(summary["Id"]),
            owner=str(labels[OWNER_LABEL]),
            gpus=gpus,
            milli=milli,
            cpu_milli=cpu,
            memory_mb=memory,
            created=float(labels[CREATED_LABEL]),
            task=TaskInstanceRef.from_labels(labels),
            queue=labels.get(CLAIM_QUEUE_LABEL),
        )
    except (KeyError, ValueError):
        return None


def unreserved(node: NodeState) -> NodeState:
    """``node``'s capacity with nothing reserved on it: the start of the fold."""
    gpus = tuple(replace(g, allocated_milli=0) for g in node.gpus)
    return replace(node, gpus=gpus, cpu_allocated_milli=0, memory_allocated_mb=0, cpu_unmeasured_milli=0)


def claim_shortfalls(node: NodeState, taken: Resources, gpu_ids: tuple[int, ...]) -> tuple[Reason, ...]:
    """What ``node``'s reservations leave too little of for ``taken`` on ``gpu_ids``; empty if it fits.

    Placement's capacity check, as a claim asks it: on the GPUs it names, and against capacity
    less reservations only (what the agent measures lags the very tasks the claims are for).
    CPU and memory are taken on trust on a host whose capacity is unknown (no agent).
    """
    return shortfalls(taken, node, gpu_ids, measured=False)


@dataclass(frozen=True, slots=True)
class Allocation:
    """A host with its claims folded in, and the claims the fold refused."""

    node: NodeState
    counted: tuple[Claim, ...]
    refused: tuple[Claim, ...]


def allocation(node: NodeState, claims: Iterable[Claim]) -> Allocation:
    """Fold ``claims`` oldest first (ties by owner) onto ``node`` through ``apply``, each only if
    :func:`claim_shortfalls` finds room for it.

    The oldest claim wins: of two claims that together overcommit a host, the later one is
    refused, whatever order the engine listed them in. An unreachable node is left as it is.
    Counted claims made after the host's measurement (less than
    :data:`~provider.scheduling.accounting.MEASURE_WINDOW_S` before it) are its unseen load
    (:func:`~provider.scheduling.accounting.with_unseen`).
    """
    if node.unreachable is not None:
        return Allocation(node, (), ())
    counted: list[Claim] = []
    refused: list[Claim] = []
    for claim in sorted(claims, key=lambda c: (c.created, c.owner)):
        taken = claim.resources
        if not claim_shortfalls(node, taken, claim.gpus):
            node = apply(node, taken, claim.gpus)
            counted.append(claim)
        else:
            refused.append(claim)
    if node.measured_at is not None:
        since = node.measured_at - MEASURE_WINDOW_S
        node = with_unseen(node, [c.resources for c in counted if c.created > since])
    return Allocation(node, tuple(counted), tuple(refused))


@dataclass(frozen=True, slots=True)
class GpuProblem:
    """A host's engine refused to start a GPU container, as remembered on the host itself."""

    container_id: str
    reason: str
    expires: float


def problem_labels(reason: str, expires: float) -> dict[str, str]:
    """Labels of a host-problem marker: a never-started container that placement reads with the
    claims and that lapses at ``expires``, so a repaired host is offered GPU work again."""
    return {RESERVATION_LABEL: "problem", OWNER_LABEL: PROBLEM_OWNER, PROBLEM_LABEL: reason,
            PROBLEM_EXPIRES_LABEL: f"{expires:.3f}"}


def parse_problem(summary: Mapping[str, Any]) -> GpuProblem | None:
    """A host-problem marker from one entry of a host's container list; None for anything else."""
    labels = summary.get("Labels") or {}
    if PROBLEM_LABEL not in labels:
        return None
    try:
        return GpuProblem(str(summary["Id"]), str(labels[PROBLEM_LABEL]), float(labels[PROBLEM_EXPIRES_LABEL]))
    except (KeyError, ValueError):
        return None


def live_owners(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    """Owners whose task container is running, among an engine's containers with an owner."""
    return {
        str((c.get("Labels") or {}).get(OWNER_LABEL))
        for c in entries
        if c.get("State") == "running" and (c.get("Labels") or {}).get(OWNER_LABEL)
    }


def stale_claims(claims: Sequence[Claim], owners: set[str], now: float, grace_s: float) -> list[Claim]:
    """Claims whose task no longer runs: no running container carries their owner, and
    they are older than ``grace_s`` (the window between claiming and starting the task)."""
    return [c for c in claims if c.owner not in owners and now - c.created > grace_s]


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """A hold (:mod:`provider.scheduling.waiting`) as kept on a host: a never-started container."""

    container_id: str
    expires: float
    hold: Hold
    task: TaskInstanceRef | None = None


def hold_name(owner: str) -> str:
    """One hold per waiter and host: a second create by the same waiter is refused (409)."""
    return f"{HOLD_PREFIX}{owner}"


def hold_labels(owner: str, since: float, expires: float, task: TaskInstanceRef) -> dict[str, str]:
    """Labels of a hold: the waiting task instance, its place in line and when the hold lapses.

    ``expires`` is the end of the task's wait (its timeout): a hold whose task was killed
    without cleaning up lapses then at the latest. The hold carries ``OWNER_LABEL`` like a
    claim, so one list of a host's containers with an owner finds claims, holds and tasks.
    """
    return {
        **task.to_labels(),
        RESERVATION_LABEL: "hold",
        OWNER_LABEL: owner,
        HOLD_LABEL: "true",
        HOLD_OWNER_LABEL: owner,
        HOLD_SINCE_LABEL: f"{since:.3f}",
        HOLD_EXPIRES_LABEL: f"{expires:.3f}",
    }


def parse_hold(host: str, summary: Mapping[str, Any]) -> HoldRecord | None:
    """A hold from one entry of a host's container list; None for anything else."""
    labels = summary.get("Labels") or {}
    if labels.get(HOLD_LABEL) != "true":
        return None
    ref = TaskInstanceRef.from_labels(labels)
    try:
        return HoldRecord(
            container_id=str(summary["Id"]),
            expires=float(labels[HOLD_EXPIRES_LABEL]),
            hold=Hold(host=host, owner=str(labels[HOLD_OWNER_LABEL]), since=float(labels[HOLD_SINCE_LABEL]),
                      task=str(ref) if ref else "?"),
            task=ref,
        )
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class PlaceInLine:
    """A task waiting in a pool with queues, as kept on a host: a never-started container that
    every reader of the pool sees, so each waiter can work out the whole line by itself.

    It lapses at ``expires`` unless its waiter renews it (every poll), so a waiter that died
    without cleaning up leaves the line within one lease (:func:`~provider.reservations.queueing.lease_s`).
    """

    container_id: str
    host: str
    pool: str
    waiting: Waiting
    request: PlacementRequest
    expires: float
    task: TaskInstanceRef | None = None


def line_name(owner: str) -> str:
    """One place in line per waiter: a second create by the same waiter is refused (409)."""
    return f"{WAIT_PREFIX}{owner}"


def line_labels(waiting: Waiting, request: PlacementRequest, expires: float, task: TaskInstanceRef,
                pool: str) -> dict[str, str]:
    """Labels of a place in line: the task, its pool, queue, priority, since when it waits, what it asks."""
    return {
        **task.to_labels(),
        RESERVATION_LABEL: "wait",
        OWNER_LABEL: waiting.owner,
        WAIT_LABEL: "true",
        WAIT_POOL_LABEL: pool,
        WAIT_QUEUE_LABEL: waiting.queue,
        WAIT_PRIORITY_LABEL: str(waiting.priority),
        WAIT_SINCE_LABEL: f"{waiting.since:.3f}",
        WAIT_EXPIRES_LABEL: f"{expires:.3f}",
        WAIT_REQUEST_LABEL: json.dumps(request_document(request), sort_keys=True, separators=(",", ":")),
    }


def request_document(request: PlacementRequest) -> dict[str, Any]:
    """A request as plain JSON values (the trigger's kwargs and a place in line carry it so)."""
    return {**{f.name: getattr(request, f.name) for f in fields(request)}, "labels": dict(request.labels)}


def parse_place_in_line(host: str, summary: Mapping[str, Any]) -> PlaceInLine | None:
    """A place in line from one entry of a host's container list; None for anything else,
    malformed ones included (numbers that are not finite, a request that is not one)."""
    labels = summary.get("Labels") or {}
    if labels.get(WAIT_LABEL) != "true":
        return None
    try:
        request = PlacementRequest(**json.loads(labels[WAIT_REQUEST_LABEL]))
        since, expires = float(labels[WAIT_SINCE_LABEL]), float(labels[WAIT_EXPIRES_LABEL])
        if not (math.isfinite(since) and math.isfinite(expires)):
            return None
        ref = TaskInstanceRef.from_labels(labels)
        waiting = Waiting(str(labels[OWNER_LABEL]), str(labels[WAIT_QUEUE_LABEL]), int(labels[WAIT_PRIORITY_LABEL]),
                          since, Amounts.of(request.resources), str(ref) if ref else "")
        return PlaceInLine(str(summary["Id"]), host, str(labels[WAIT_POOL_LABEL]), waiting, request, expires, ref)
    except (KeyError, ValueError, TypeError):
        return None
