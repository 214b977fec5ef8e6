"""Pure rules of reservations: what a claim records, a host's allocation, staleness, holds.

A **claim** reserves, for one task on one host, GPU ids with the milli-GPUs taken on each,
milli-CPUs and memory: a :class:`~provider.scheduling.Resources` vector on named GPUs. A host's
allocation is the fold of its claims, oldest first, through :func:`provider.scheduling.apply`:
the same function the trace simulator folds its placements through, so what the benchmark
measures is the accounting production runs. A claim that the fold cannot take (placement's own
capacity check, :func:`provider.scheduling.shortfalls`, finds a GPU, the CPUs or the memory
short) is *refused*: it counts for nothing, and its claimant, which verifies after creating
it, takes it back.

Every label is read strictly (:mod:`provider.reservations.strict`), and every age is measured on
the engine's clock: a container's ``Created`` as the engine lists it, against the engine's time
passed in, never a time a worker wrote. Each record carries the deployment that made it
(:mod:`provider.reservations.deployment`): readers count every deployment's claims, and act only
on their own.

Everything here is a function of plain values (container summaries as the engine lists them,
an engine clock reading passed in), so every rule is unit-tested without an engine. The I/O lives in
:mod:`provider.reservations.store` and :mod:`provider.reservations.pool`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any
import json

from provider.labels import (
    CLAIM_CPU_LABEL,
    CLAIM_GPUS_LABEL,
    CLAIM_LABEL,
    CLAIM_MEMORY_LABEL,
    CLAIM_MILLI_LABEL,
    CLAIM_PREFIX,
    CLAIM_QUEUE_LABEL,
    DEPLOYMENT_LABEL,
    HOLD_LABEL,
    HOLD_LEASE_LABEL,
    HOLD_OWNER_LABEL,
    HOLD_PREFIX,
    HOLD_SINCE_LABEL,
    OWNER_LABEL,
    PROBLEM_LABEL,
    PROBLEM_LEASE_LABEL,
    PROBLEM_OWNER,
    RESERVATION_LABEL,
    WAIT_LABEL,
    WAIT_LEASE_LABEL,
    WAIT_POOL_LABEL,
    WAIT_PREFIX,
    WAIT_PRIORITY_LABEL,
    WAIT_QUEUE_LABEL,
    WAIT_REQUEST_LABEL,
    WAIT_SINCE_LABEL,
)
from provider.errors import LabelError, SpecError
from provider.reservations import strict
from provider.scheduling.accounting import MEASURE_WINDOW_S, apply, with_unseen
from provider.scheduling.capacity import shortfalls
from provider.scheduling.model import NodeState, PlacementRequest, Resources
from provider.scheduling.queues import Amounts, Waiting
from provider.scheduling.reasons import Reason
from provider.scheduling.waiting import Hold
from provider.task_instance import TaskInstanceRef


LEGACY_CREATED_LABEL = f"{CLAIM_LABEL}.created"
"""A worker's clock reading that claims made before the engine's clock judged ages carry; read by
nobody, known only so that such a claim is not refused as unknown."""
CLAIM_KEYS = frozenset({OWNER_LABEL, CLAIM_GPUS_LABEL, CLAIM_MILLI_LABEL, CLAIM_CPU_LABEL, CLAIM_MEMORY_LABEL,
                        CLAIM_QUEUE_LABEL, LEGACY_CREATED_LABEL})
"""Every label a claim may carry under ``claim.``."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one task reserves on one host, as read back from the host's engine.

    ``milli`` is taken on *each* GPU of ``gpus`` (1000 for whole GPUs, less for a share).
    ``created`` is when the engine created the claim, on the engine's clock (None when the
    engine did not say: its age is unknown and it is never stale). ``malformed`` says why its
    labels could not be read: such a claim takes the whole host (:func:`allocation`) until it is
    stale, since what it reserves is unknown and a GPU it may reserve must not look free.
    """

    container_id: str
    owner: str
    gpus: tuple[int, ...]
    milli: int
    cpu_milli: int
    memory_mb: int
    created: float | None
    task: TaskInstanceRef | None = None
    queue: str | None = None
    """The queue it counts against; None on a pool without queues."""
    deployment: str | None = None
    """The deployment that made it; None on a claim made before deployments were labelled."""
    malformed: str | None = None

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
    taken: Resources, gpu_ids: Sequence[int], owner: str, task: TaskInstanceRef | None,
    queue: str | None = None, *, deployment: str,
) -> dict[str, str]:
    """Labels of a claim container: its deployment and task instance, everything the claim
    reserves, and the queue it counts against. No time: the engine's ``Created`` is its age."""
    return {
        **({CLAIM_QUEUE_LABEL: queue} if queue is not None else {}),
        **(task.to_labels() if task is not None else {}),
        DEPLOYMENT_LABEL: deployment,
        RESERVATION_LABEL: "claim",
        CLAIM_LABEL: "true",
        OWNER_LABEL: owner,
        CLAIM_GPUS_LABEL: ",".join(str(i) for i in sorted(gpu_ids)),
        CLAIM_MILLI_LABEL: str(taken.gpu_milli),
        CLAIM_CPU_LABEL: str(taken.cpu_milli),
        CLAIM_MEMORY_LABEL: str(taken.memory_mb),
    }


def parse_claim(summary: Mapping[str, Any]) -> Claim | None:
    """A claim from one entry of the engine's container list; None for anything else.

    Every number is read strictly (:mod:`provider.reservations.strict`): GPU indexes distinct
    and in range, milli-GPUs in 1..1000, CPUs and memory not negative nor absurd, no unknown
    ``claim.`` label, and a share on one GPU only. A claim that fails any of these is kept
    as *malformed* (``Claim.malformed`` says why), which takes the whole host: ignoring it
    would let a ``nan`` make its GPUs look free.
    """
    labels = summary.get("Labels") or {}
    if labels.get(CLAIM_LABEL) != "true":
        return None
    ident, owner = str(summary.get("Id", "")), str(labels.get(OWNER_LABEL, ""))
    deployment, task, queue = labels.get(DEPLOYMENT_LABEL), TaskInstanceRef.from_labels(labels), labels.get(CLAIM_QUEUE_LABEL)
    try:
        when: float | None = strict.created(summary)
    except LabelError:
        when = None
    try:
        strict.only_known(labels, CLAIM_LABEL, CLAIM_KEYS)
        if not owner:
            raise LabelError(f"label {OWNER_LABEL} is missing")
        gpus = strict.gpu_ids(labels, CLAIM_GPUS_LABEL)
        milli = strict.integer(labels, CLAIM_MILLI_LABEL, 1, 1000)
        cpu = strict.integer(labels, CLAIM_CPU_LABEL, 0, strict.MAX_CPU_MILLI)
        memory = strict.integer(labels, CLAIM_MEMORY_LABEL, 0, strict.MAX_MEMORY_MB)
        try:
            Resources(gpus=len(gpus), gpu_milli=milli, cpu_milli=cpu, memory_mb=memory)  # no request has these
        except SpecError as exc:
            raise LabelError(f"labels {CLAIM_GPUS_LABEL} and {CLAIM_MILLI_LABEL} together: {exc}") from None
    except LabelError as exc:
        return Claim(ident, owner, (), 1000, 0, 0, when, task, queue, deployment, malformed=str(exc))
    return Claim(ident, owner, gpus, milli, cpu, memory, when, task, queue, deployment)


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

    The oldest claim by the engine's clock wins: of two claims that together overcommit a host,
    the later one is refused, whatever order the engine listed them in. A malformed claim is
    always counted and takes the whole host (every GPU, CPU and megabyte): what it reserves is
    unknown. An unreachable node is left as it is.
    Counted claims made after the host's measurement (less than
    :data:`~provider.scheduling.accounting.MEASURE_WINDOW_S` before it) are its unseen load
    (:func:`~provider.scheduling.accounting.with_unseen`).
    """
    if node.unreachable is not None:
        return Allocation(node, (), ())
    counted: list[Claim] = []
    refused: list[Claim] = []
    whole = False
    for claim in sorted(claims, key=lambda c: (c.created is None, c.created or 0.0, c.owner, c.container_id)):
        if claim.malformed is not None:
            counted.append(claim)
            whole = True
            continue
        taken = claim.resources
        if not claim_shortfalls(node, taken, claim.gpus):
            node = apply(node, taken, claim.gpus)
            counted.append(claim)
        else:
            refused.append(claim)
    if node.measured_at is not None:
        since = node.measured_at - MEASURE_WINDOW_S
        node = with_unseen(node, [c.resources for c in counted if c.created is not None and c.created > since])
    if whole:
        node = replace(node, gpus=tuple(replace(g, allocated_milli=1000) for g in node.gpus),
                       cpu_allocated_milli=node.cpu_milli, memory_allocated_mb=node.memory_mb)
    return Allocation(node, tuple(counted), tuple(refused))


@dataclass(frozen=True, slots=True)
class GpuProblem:
    """A host's engine refused to start a GPU container, as remembered on the host itself;
    ``expires`` is on the engine's clock."""

    container_id: str
    reason: str
    expires: float
    deployment: str | None = None


def problem_labels(reason: str, lease_s: float, *, deployment: str) -> dict[str, str]:
    """Labels of a host-problem marker: a never-started container that placement reads with the
    claims and that lapses ``lease_s`` after the engine created it, so a repaired host is
    offered GPU work again."""
    return {DEPLOYMENT_LABEL: deployment, RESERVATION_LABEL: "problem", OWNER_LABEL: PROBLEM_OWNER,
            PROBLEM_LABEL: reason, PROBLEM_LEASE_LABEL: f"{lease_s:.3f}"}


def parse_problem(summary: Mapping[str, Any]) -> GpuProblem | None:
    """A host-problem marker from one entry of a host's container list; None for anything else,
    a malformed one included (a marker only steers GPU work elsewhere for a while)."""
    labels = summary.get("Labels") or {}
    if PROBLEM_LABEL not in labels:
        return None
    try:
        strict.only_known(labels, PROBLEM_LABEL, {PROBLEM_LEASE_LABEL})
        expires = strict.created(summary) + strict.lease(labels, PROBLEM_LEASE_LABEL)
        return GpuProblem(str(summary["Id"]), str(labels[PROBLEM_LABEL]), expires, labels.get(DEPLOYMENT_LABEL))
    except (KeyError, LabelError):
        return None


def live_owners(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    """Owners whose task container is running, among an engine's containers with an owner."""
    return {
        str((c.get("Labels") or {}).get(OWNER_LABEL))
        for c in entries
        if c.get("State") == "running" and (c.get("Labels") or {}).get(OWNER_LABEL)
    }


def stale_claims(claims: Sequence[Claim], owners: set[str], now: float | None, grace_s: float) -> list[Claim]:
    """Claims whose task no longer runs: no running container carries their owner, and
    they are older than ``grace_s`` (the window between claiming and starting the task), by the
    engine's clock (``now`` is the engine's time; None when unknown: nothing is stale then)."""
    if now is None:
        return []
    return [c for c in claims if c.created is not None and c.owner not in owners and now - c.created > grace_s]


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """A hold (:mod:`provider.scheduling.waiting`) as kept on a host: a never-started container.
    ``expires`` is on the engine's clock: its creation plus its lease."""

    container_id: str
    expires: float
    hold: Hold
    task: TaskInstanceRef | None = None
    deployment: str | None = None


HOLD_KEYS = frozenset({HOLD_OWNER_LABEL, HOLD_SINCE_LABEL, HOLD_LEASE_LABEL})


def hold_name(owner: str) -> str:
    """One hold per waiter and host: a second create by the same waiter is refused (409)."""
    return f"{HOLD_PREFIX}{owner}"


def hold_labels(owner: str, since: float, lease_s: float, task: TaskInstanceRef, *, deployment: str) -> dict[str, str]:
    """Labels of a hold: the waiting task instance, its place in line and how long the hold lasts.

    ``lease_s`` runs to the end of the task's wait (its timeout) from the hold's creation on the
    engine's clock: a hold whose task was killed without cleaning up lapses then at the latest.
    The hold carries ``OWNER_LABEL`` like a claim, so one list of a host's containers with an
    owner finds claims, holds and tasks.
    """
    return {
        **task.to_labels(),
        DEPLOYMENT_LABEL: deployment,
        RESERVATION_LABEL: "hold",
        OWNER_LABEL: owner,
        HOLD_LABEL: "true",
        HOLD_OWNER_LABEL: owner,
        HOLD_SINCE_LABEL: f"{since:.3f}",
        HOLD_LEASE_LABEL: f"{lease_s:.3f}",
    }


def parse_hold(host: str, summary: Mapping[str, Any]) -> HoldRecord | None:
    """A hold from one entry of a host's container list; None for anything else, a malformed
    one included: it holds nothing (a hold only orders waiters, and one that could not lapse
    would keep a host from every other task)."""
    labels = summary.get("Labels") or {}
    if labels.get(HOLD_LABEL) != "true":
        return None
    ref = TaskInstanceRef.from_labels(labels)
    try:
        strict.only_known(labels, HOLD_LABEL, HOLD_KEYS)
        owner_text = str(labels[HOLD_OWNER_LABEL])
        since = strict.number(labels, HOLD_SINCE_LABEL, 0.0, strict.MAX_TIME_S)
        expires = strict.created(summary) + strict.lease(labels, HOLD_LEASE_LABEL)
        return HoldRecord(
            container_id=str(summary["Id"]),
            expires=expires,
            hold=Hold(host=host, owner=owner_text, since=since, task=str(ref) if ref else "?"),
            task=ref,
            deployment=labels.get(DEPLOYMENT_LABEL),
        )
    except (KeyError, LabelError):
        return None


@dataclass(frozen=True, slots=True)
class PlaceInLine:
    """A task waiting in a pool with queues, as kept on a host: a never-started container that
    every reader of the pool sees, so each waiter can work out the whole line by itself.

    It lapses at ``expires`` (on the engine's clock: its creation plus its lease) unless its
    waiter renews it (every poll), so a waiter that died without cleaning up leaves the line
    within one lease (:func:`~provider.reservations.queueing.lease_s`).
    """

    container_id: str
    host: str
    pool: str
    waiting: Waiting
    request: PlacementRequest
    expires: float
    task: TaskInstanceRef | None = None
    deployment: str | None = None


WAIT_KEYS = frozenset({WAIT_POOL_LABEL, WAIT_QUEUE_LABEL, WAIT_PRIORITY_LABEL, WAIT_SINCE_LABEL, WAIT_LEASE_LABEL,
                       WAIT_REQUEST_LABEL})


def line_names(owner: str) -> tuple[str, str]:
    """The two names a waiter's place in line may have. A place is renewed by making it under
    the name not in use and only then removing the old one, so the waiter is never missing from
    the line for a moment in which a task behind it could start. A create under a name in use
    is refused (409), so two readers of one waiter make no third place."""
    return f"{WAIT_PREFIX}{owner}", f"{WAIT_PREFIX}{owner}.renewed"


def line_labels(waiting: Waiting, request: PlacementRequest, lease_s: float, task: TaskInstanceRef,
                pool: str, *, deployment: str) -> dict[str, str]:
    """Labels of a place in line: the task, its pool, queue, priority, since when it waits, what
    it asks, and how long the place lasts from its creation on the engine's clock."""
    return {
        **task.to_labels(),
        DEPLOYMENT_LABEL: deployment,
        RESERVATION_LABEL: "wait",
        OWNER_LABEL: waiting.owner,
        WAIT_LABEL: "true",
        WAIT_POOL_LABEL: pool,
        WAIT_QUEUE_LABEL: waiting.queue,
        WAIT_PRIORITY_LABEL: str(waiting.priority),
        WAIT_SINCE_LABEL: f"{waiting.since:.3f}",
        WAIT_LEASE_LABEL: f"{lease_s:.3f}",
        WAIT_REQUEST_LABEL: json.dumps(request_document(request), sort_keys=True, separators=(",", ":")),
    }


def request_document(request: PlacementRequest) -> dict[str, Any]:
    """A request as plain JSON values (the trigger's kwargs and a place in line carry it so)."""
    return {**{f.name: getattr(request, f.name) for f in fields(request)}, "labels": dict(request.labels)}


def parse_place_in_line(host: str, summary: Mapping[str, Any]) -> PlaceInLine | None:
    """A place in line from one entry of a host's container list; None for anything else,
    malformed ones included (numbers that are not finite or out of range, a request that is not
    one, an unknown ``wait.`` label): such a place is not in the line."""
    labels = summary.get("Labels") or {}
    if labels.get(WAIT_LABEL) != "true":
        return None
    try:
        strict.only_known(labels, WAIT_LABEL, WAIT_KEYS)
        request = PlacementRequest(**json.loads(labels[WAIT_REQUEST_LABEL]))
        since = strict.number(labels, WAIT_SINCE_LABEL, 0.0, strict.MAX_TIME_S)
        expires = strict.created(summary) + strict.lease(labels, WAIT_LEASE_LABEL)
        priority = strict.integer(labels, WAIT_PRIORITY_LABEL, -strict.MAX_PRIORITY, strict.MAX_PRIORITY)
        ref = TaskInstanceRef.from_labels(labels)
        waiting = Waiting(str(labels[OWNER_LABEL]), str(labels[WAIT_QUEUE_LABEL]), priority,
                          since, Amounts.of(request.resources), str(ref) if ref else "")
        return PlaceInLine(str(summary["Id"]), host, str(labels[WAIT_POOL_LABEL]), waiting, request, expires, ref,
                           labels.get(DEPLOYMENT_LABEL))
    except (KeyError, ValueError, TypeError):
        return None
