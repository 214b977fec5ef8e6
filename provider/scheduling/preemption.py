"""Preemption: which running tasks give up their room to a waiting one, as pure functions.

A pool shared through queues (:mod:`provider.scheduling.queues`) lends idle quota; preemption is
how it comes back, and how a long high-priority run avoids waiting behind a week of low-priority
work. The rules are Kueue's, which GPU teams on Kubernetes know, plus one it lacks:

* **When** (:class:`PreemptionRules`). ``reclaim``: a queue that would still be within its quota
  with the waiting task takes back what other queues borrow (``never``, ``lower_priority``: only
  from tasks of lower priority than the waiting one, ``any``). ``within_queue``: a task may
  preempt tasks of lower priority in its own queue (``never``, ``lower_priority``). A task that
  has run less than ``min_runtime_s`` is never preempted, so a busy pool does not keep
  restarting its newest tasks.
* **Exactly enough, on one host.** Victims are taken on one host, in victim order, until the
  waiting task fits there and its queue admits it; then every victim it could do without is
  given back, last taken first. Of the hosts where that works, the one whose victims cost least
  is chosen (:func:`cost`): its worst victim comes earliest in victim order, then fewest victims.
* **Victim order** (:data:`LEAST_WORK_LOST`): tasks of borrowing queues first, then the lowest
  priority, then the one that loses least work, what it ran since its last checkpoint (all of
  its run when it has none), then the youngest. Kueue's order (:data:`KUEUE_ORDER`) ends with the
  most recently admitted instead and does not know checkpoints; ``bench/preemption_sim.py`` replays
  both. Borrowing is judged on the usage before any victim is taken, so the order is one list.

Time is a number the caller passes (``now``): this module reads no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from provider.errors import HostConfigError
from provider.scheduling.accounting import release
from provider.scheduling.filters import reasons
from provider.scheduling.model import NodeState, PlacementRequest, Resources
from provider.scheduling.queues import RESOURCES, Admitted, Amounts, QueueSpec, Waiting, admit

RECLAIM = ("never", "lower_priority", "any")
WITHIN_QUEUE = ("never", "lower_priority")


@dataclass(frozen=True, slots=True)
class PreemptionRules:
    """When a waiting task may preempt running ones (see the module's description). The default
    preempts nothing: a pool turns preemption on."""

    reclaim: str = "never"
    within_queue: str = "never"
    min_runtime_s: float = 0.0

    def __post_init__(self) -> None:
        if self.reclaim not in RECLAIM:
            raise HostConfigError(f"preemption reclaim={self.reclaim!r}; use one of {', '.join(RECLAIM)}")
        if self.within_queue not in WITHIN_QUEUE:
            raise HostConfigError(f"preemption within_queue={self.within_queue!r}; use one of "
                                  f"{', '.join(WITHIN_QUEUE)}")
        if not self.min_runtime_s >= 0:
            raise HostConfigError(f"preemption min_runtime_s={self.min_runtime_s!r}; it must be a number of "
                                  "seconds >= 0")

    @property
    def enabled(self) -> bool:
        return self.reclaim != "never" or self.within_queue != "never"


@dataclass(frozen=True, slots=True)
class Running:
    """A running task as preemption sees it: who (``owner``, ``task`` for messages), its queue and
    priority, where it runs and what it takes there, when it started and when it last wrote a
    checkpoint (None: never), both on the caller's clock."""

    owner: str
    queue: str
    priority: int
    host: str
    gpus: tuple[int, ...]
    taken: Resources
    started: float
    checkpointed: float | None = None
    task: str = ""

    def work_lost_s(self, now: float) -> float:
        """What preempting it now throws away: its run since its last checkpoint of this run."""
        since = self.started if self.checkpointed is None else max(self.started, self.checkpointed)
        return max(0.0, now - since)


VictimKey = Callable[[Running, bool, float], tuple[float, ...]]
"""A victim order: the sort key of a candidate, given whether its queue borrows and ``now``;
the smallest key is preempted first."""


def least_work_lost(victim: Running, borrows: bool, now: float) -> tuple[float, ...]:
    """Borrowers first, then lowest priority, then least work lost, then youngest."""
    return (0.0 if borrows else 1.0, float(victim.priority), victim.work_lost_s(now), -victim.started)


def kueue_order(victim: Running, borrows: bool, now: float) -> tuple[float, ...]:
    """Kueue's: borrowers first, then lowest priority, then the most recently admitted."""
    return (0.0 if borrows else 1.0, float(victim.priority), -victim.started)


LEAST_WORK_LOST: VictimKey = least_work_lost
KUEUE_ORDER: VictimKey = kueue_order


@dataclass(frozen=True, slots=True)
class Victim:
    """A task to preempt and why, in words for both task logs."""

    running: Running
    why: str


@dataclass(frozen=True, slots=True)
class Preemption:
    """Preempt ``victims`` on ``host`` and the waiting task fits there."""

    host: str
    victims: tuple[Victim, ...]

    def work_lost_s(self, now: float) -> float:
        return sum(v.running.work_lost_s(now) for v in self.victims)


def borrowing(queue: str, usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec]) -> bool:
    """Whether ``queue`` uses more than its quota of a resource it has a quota for."""
    spec = queues.get(queue)
    if spec is None:
        return False
    used = usage.get(queue, Amounts()).values()
    return any(spec.governs(r) and u > spec.quota[r] for r, u in zip(RESOURCES, used))


def within_quota(queue: str, request: Amounts, usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec]) -> bool:
    """Whether ``queue`` with ``request`` added stays within its quota of every resource it has one for."""
    spec = queues[queue]
    after = (usage.get(queue, Amounts()) + request).values()
    return all(not spec.governs(r) or a <= spec.quota[r] for r, a in zip(RESOURCES, after))


def why_preemptible(waiter: Waiting, victim: Running, usage: Mapping[str, Amounts],
                    queues: Mapping[str, QueueSpec], rules: PreemptionRules, now: float) -> str | None:
    """Why ``victim`` may give its room to ``waiter`` under ``rules`` and ``usage``; None when it may not."""
    if victim.owner == waiter.owner or now - victim.started < rules.min_runtime_s:
        return None
    if victim.queue == waiter.queue:
        if rules.within_queue == "lower_priority" and victim.priority < waiter.priority:
            return f"priority {victim.priority} below {waiter.priority} in queue {waiter.queue}"
        return None
    if rules.reclaim == "never" or not borrowing(victim.queue, usage, queues):
        return None
    if not within_quota(waiter.queue, waiter.request, usage, queues):
        return None
    if rules.reclaim == "lower_priority" and victim.priority >= waiter.priority:
        return None
    return f"queue {victim.queue} borrows beyond its quota; queue {waiter.queue} reclaims its own quota"


def _room(waiter: Waiting, request: PlacementRequest, node: NodeState, usage: Mapping[str, Amounts],
          queues: Mapping[str, QueueSpec]) -> bool:
    return not reasons(request, node) and isinstance(admit(waiter.queue, waiter.request, usage, queues), Admitted)


def _without(usage: Mapping[str, Amounts], victims: Sequence[Running]) -> dict[str, Amounts]:
    left = dict(usage)
    for v in victims:
        left[v.queue] = left.get(v.queue, Amounts()) - Amounts.of(v.taken)
    return left


def _freed(node: NodeState, victims: Sequence[Running]) -> NodeState:
    for v in victims:
        node = release(node, v.taken, v.gpus)
    return node


def on_host(waiter: Waiting, request: PlacementRequest, node: NodeState, running: Sequence[Running],
            usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec], rules: PreemptionRules, now: float,
            key: VictimKey = LEAST_WORK_LOST) -> Preemption | None:
    """The fewest victims, in victim order, that make room for ``waiter`` on ``node`` (``running``:
    the tasks running there); None when preempting every task that may be preempted would not."""
    if not rules.enabled or node.unreachable is not None or not running:
        return None
    if node.gpu_free_milli + sum(r.taken.gpu_milli_total for r in running) < request.gpu_milli_total:
        return None  # not even every task there would make room
    candidates = sorted(running, key=lambda r: (key(r, borrowing(r.queue, usage, queues), now), r.owner))
    taken: list[Victim] = []
    freed, left = node, dict(usage)
    for candidate in candidates:
        why = why_preemptible(waiter, candidate, left, queues, rules, now)
        if why is None:
            continue
        taken.append(Victim(candidate, why))
        freed = release(freed, candidate.taken, candidate.gpus)
        left[candidate.queue] = left.get(candidate.queue, Amounts()) - Amounts.of(candidate.taken)
        if _room(waiter, request, freed, left, queues):
            return Preemption(node.name, _trimmed(waiter, request, node, taken, usage, queues))
    return None


def _trimmed(waiter: Waiting, request: PlacementRequest, node: NodeState, taken: list[Victim],
             usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec]) -> tuple[Victim, ...]:
    """``taken`` less every victim the waiter does not need after all, trying the last taken first."""
    kept = list(taken)
    for victim in reversed(taken[:-1]):
        rest = [v.running for v in kept if v is not victim]
        if _room(waiter, request, _freed(node, rest), _without(usage, rest), queues):
            kept.remove(victim)
    return tuple(kept)


def cost(preemption: Preemption, usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec],
         now: float, key: VictimKey = LEAST_WORK_LOST) -> tuple[tuple[float, ...], int, float]:
    """How much a preemption costs, to compare hosts: the key of its worst victim (a host whose
    worst victim comes earlier in victim order costs less), then the number of victims, then the
    work they lose together."""
    worst = max(key(v.running, borrowing(v.running.queue, usage, queues), now) for v in preemption.victims)
    return worst, len(preemption.victims), preemption.work_lost_s(now)


def choose(waiter: Waiting, request: PlacementRequest, nodes: Sequence[NodeState], running: Sequence[Running],
           usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec], rules: PreemptionRules, now: float,
           key: VictimKey = LEAST_WORK_LOST) -> Preemption | None:
    """The preemption that makes room for ``waiter`` at least cost over ``nodes``; None when none
    can (or ``rules`` preempt nothing). Ties go to the host named first alphabetically."""
    if not rules.enabled:
        return None
    by_host: dict[str, list[Running]] = {}
    for r in running:
        by_host.setdefault(r.host, []).append(r)
    found = [p for p in (on_host(waiter, request, n, by_host[n.name], usage, queues, rules, now, key)
                         for n in nodes if n.name in by_host) if p is not None]
    if not found:
        return None
    return min(found, key=lambda p: (cost(p, usage, queues, now, key), p.host))
