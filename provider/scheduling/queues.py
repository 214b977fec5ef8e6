"""Queues that share one pool: quotas, borrowing, fair share and priorities, as pure functions.

Teams share a pool through *queues*. Each queue has a nominal **quota** per resource (milli-GPUs,
milli-CPUs, memory; a resource a queue does not name is not governed for it), may **borrow**
what the other queues leave idle up to its ``borrowing_limit``, and **lends** its own idle
quota up to its ``lending_limit`` (the rest of its quota is kept for it alone). This is the
model of Kueue's ClusterQueues in one cohort, which GPU teams on Kubernetes already know.

* :func:`admit` decides whether one request of a queue may start now, given every queue's
  usage: within its quota, or by borrowing within the limits, and never beyond what the
  queues together lend. It answers with the amounts borrowed, or with a typed
  :class:`QueueShort` saying which resource, how much was asked, used and allowed.
* :func:`order` puts the waiting requests of all queues in one line: across queues the one
  furthest below its weighted fair share goes first (its dominant resource share, as in DRF
  and Kueue's fair sharing), within a queue higher priority first, then arrival.
* :func:`may_start` is the rule a waiter applies to itself, with no central scheduler: it
  starts when it is admitted and fits, and no waiter ahead of it in :func:`order` is admitted
  and fits too (that one goes first; one that cannot start does not block those behind it).

Everything is a function of plain values, so the same functions decide in the time-based
replay of ``bench/queue_sim.py`` and in production, where usage is read from the claims on the
hosts (each claim names its queue).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Union

from provider.errors import HostConfigError
from provider.scheduling.model import Resources

DEFAULT_QUEUE = "default"
"""The queue of a task that names none, on a pool that declares none: no quota, so today's
first come, first served."""


@dataclass(frozen=True, slots=True)
class Amounts:
    """An amount of each resource a queue can govern."""

    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mb: int = 0

    @classmethod
    def of(cls, taken: Resources) -> Amounts:
        """What a request or claim takes, in the resources quotas count (a share as its part)."""
        return cls(taken.gpu_milli_total if taken.gpus else 0, taken.cpu_milli, taken.memory_mb)

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(*(a + b for a, b in zip(self.values(), other.values())))

    def __sub__(self, other: Amounts) -> Amounts:
        return Amounts(*(a - b for a, b in zip(self.values(), other.values())))

    def values(self) -> tuple[int, int, int]:
        return self.gpu_milli, self.cpu_milli, self.memory_mb


RESOURCES: tuple[str, ...] = tuple(f.name for f in fields(Amounts))
"""The resources a quota can name, in :class:`Amounts`' order."""

Limits = Mapping[str, int]
"""Per resource name (of :data:`RESOURCES`), an amount; a resource not named is not limited."""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue: its nominal ``quota``, how much more it may borrow (``borrowing_limit``;
    None: whatever is lent) and how much of its idle quota it lends (``lending_limit``; None:
    all of it), per resource, and its ``weight`` in fair sharing."""

    name: str
    quota: Limits
    borrowing_limit: Limits | None = None
    lending_limit: Limits | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        for what, limits in (("quota", self.quota), ("borrowing_limit", self.borrowing_limit),
                             ("lending_limit", self.lending_limit)):
            for resource, amount in (limits or {}).items():
                if resource not in RESOURCES:
                    raise HostConfigError(f"queue {self.name!r}: {what} names {resource!r}; use "
                                          f"{', '.join(RESOURCES)}")
                if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                    raise HostConfigError(f"queue {self.name!r}: {what} {resource}={amount!r}; it must be a "
                                          "whole number >= 0")
        for resource in set(self.borrowing_limit or {}) | set(self.lending_limit or {}):
            if resource not in self.quota:
                raise HostConfigError(f"queue {self.name!r}: a limit on {resource} without a quota for it; "
                                      f"give the queue a quota of {resource} or drop the limit")
        if not self.weight > 0:
            raise HostConfigError(f"queue {self.name!r}: weight={self.weight!r}; it must be > 0")

    def governs(self, resource: str) -> bool:
        return resource in self.quota

    def guaranteed(self, resource: str) -> int:
        """The part of its quota the queue keeps for itself (what it does not lend)."""
        return self.quota[resource] - self.lendable(resource)

    def lendable(self, resource: str) -> int:
        quota = self.quota[resource]
        if self.lending_limit is None or resource not in self.lending_limit:
            return quota
        return min(quota, self.lending_limit[resource])


@dataclass(frozen=True, slots=True)
class QueueShort:
    """Why a queue cannot admit a request now, for one resource: it ``requested`` that much,
    ``used`` that much before, has ``quota``; ``allowed`` is quota plus its borrowing limit
    (None: no limit). ``room`` is set when the queue's own limits would allow the request but
    the queues together lend too little: what the queue could still take now."""

    queue: str
    resource: str
    requested: int
    used: int
    quota: int
    allowed: int | None = None
    room: int | None = None

    def __str__(self) -> str:
        def amount(n: int) -> str:
            return amount_text(self.resource, n)

        said = f"queue {self.queue}: {amount(self.used)}{unit_text(self.resource)} in use (quota {amount(self.quota)}"
        if self.allowed is not None and self.allowed > self.quota:
            said += f", borrowing up to {amount(self.allowed - self.quota)} more"
        said += f"), asks {amount(self.requested)}"
        if self.room is not None:
            room = f"{amount(self.room)} more" if self.room else "none"
            return f"{said}; {room} can be had now, the rest of what the queues share is in use"
        return f"{said}, over what the queue may use ({amount(self.quota if self.allowed is None else self.allowed)})"


@dataclass(frozen=True, slots=True)
class Admitted:
    """The request may start; ``borrowed`` is what it takes beyond its queue's quota."""

    borrowed: Amounts


Admission = Union[Admitted, QueueShort]


def unit_text(resource: str) -> str:
    return {"gpu_milli": " GPUs", "cpu_milli": " CPUs", "memory_mb": " MB of memory"}[resource]


def amount_text(resource: str, amount: int) -> str:
    """An amount as a person writes it: GPUs and CPUs whole or in parts, memory in MB."""
    return f"{amount / 1000:g}" if resource in ("gpu_milli", "cpu_milli") else str(amount)


class QueueSetup(Mapping[str, QueueSpec]):
    """The queues of one pool, by name, checked together: names are unique and the quotas
    fit in what the pool has (``capacity``, when known)."""

    def __init__(self, specs: Iterable[QueueSpec], capacity: Amounts | None = None, pool: str = "the pool") -> None:
        self._specs: dict[str, QueueSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise HostConfigError(f"{pool}: queue {spec.name!r} is declared twice; give each queue one entry")
            self._specs[spec.name] = spec
        self.pool = pool
        if capacity is not None:
            self.check_capacity(capacity)

    def check_capacity(self, capacity: Amounts) -> None:
        """Refuse quotas that add up to more than the pool has: a promise no host can keep.
        Checked when the pool's capacity is known (read from its agents), before anything is
        reserved."""
        for resource, total in zip(RESOURCES, capacity.values()):
            quotas = sum(s.quota.get(resource, 0) for s in self._specs.values())
            if quotas > total:
                raise HostConfigError(
                    f"{self.pool}: the queues' quotas of {resource} add up to {amount_text(resource, quotas)}"
                    f"{unit_text(resource)} but its hosts have {amount_text(resource, total)}; lower the quotas so that "
                    "what each queue is promised exists")

    def __getitem__(self, name: str) -> QueueSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def known(self, name: str, pool: str = "the pool") -> QueueSpec:
        """The queue called ``name``; an error naming the queues there are when there is none."""
        if name not in self._specs:
            raise HostConfigError(f"gpu_queue={name!r} is not a queue of {pool}; its queues are "
                                  f"{', '.join(sorted(self._specs)) or 'none'}. Name one of them, or declare "
                                  f"{name!r} in the pool connection's \"queues\".")
        return self._specs[name]


def admit(queue: str, request: Amounts, usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec]) -> Admission:
    """Whether ``request`` of ``queue`` may start now, given each queue's current ``usage``.

    For every resource the queue governs: its usage with the request must stay within its
    quota plus its borrowing limit, and what all queues use beyond the part of their quota they
    keep for themselves must stay within what they lend together (the cohort's shared part).
    The first resource that fails is the answer; a queue with no quota for a resource is not
    limited in it.
    """
    spec = queues[queue]
    before_all = usage.get(queue, Amounts())
    borrowed = dict.fromkeys(RESOURCES, 0)
    for resource, asked, before in zip(RESOURCES, request.values(), before_all.values()):
        if not asked or not spec.governs(resource):
            continue
        after, quota = before + asked, spec.quota[resource]
        limit = (spec.borrowing_limit or {}).get(resource)
        allowed = None if limit is None else quota + limit
        if allowed is not None and after > allowed:
            return QueueShort(queue, resource, asked, before, quota, allowed)
        governing = [q for q in queues.values() if q.governs(resource)]
        others = sum(max(0, getattr(usage.get(q.name, Amounts()), resource) - q.guaranteed(resource))
                     for q in governing if q.name != queue)
        lent = sum(q.lendable(resource) for q in governing)
        kept = spec.guaranteed(resource)
        room = max(0, kept - before) + max(0, lent - others - max(0, before - kept))
        if asked > room:
            return QueueShort(queue, resource, asked, before, quota, allowed, room)
        borrowed[resource] = max(0, after - quota)
    return Admitted(Amounts(**borrowed))


def quota_totals(queues: Mapping[str, QueueSpec]) -> tuple[int, ...]:
    """All queues' quota of each resource, in :data:`RESOURCES` order."""
    return tuple(sum(s.quota.get(resource, 0) for s in queues.values()) for resource in RESOURCES)


def dominant_share(queue: str, usage: Amounts, queues: Mapping[str, QueueSpec],
                   totals: tuple[int, ...] | None = None) -> float:
    """The queue's usage of the resource it uses most of, as a share of all queues' quota of
    it, divided by its weight: what fair sharing equalises (Dominant Resource Fairness).
    ``totals`` (:func:`quota_totals`) saves recounting them when many shares are compared."""
    spec = queues[queue]
    share = 0.0
    for resource, used, total in zip(RESOURCES, usage.values(), totals or quota_totals(queues)):
        if total and spec.governs(resource):
            share = max(share, used / total)
    return share / spec.weight


@dataclass(frozen=True, slots=True)
class Waiting:
    """A request waiting for room: its owner token, queue, priority (higher first), when it
    started waiting, and what it asks."""

    owner: str
    queue: str
    priority: int
    since: float
    request: Amounts
    task: str = ""
    """Who waits, for messages (``dag_id.task_id run_id``)."""


def order(waiting: Iterable[Waiting], usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec]) -> list[Waiting]:
    """Every waiting request in the order they get room.

    Within a queue: higher priority first, then the one waiting longest (then the owner token,
    so every reader agrees). Across queues: the next is the head of the queue with the lowest
    :func:`dominant_share`, counting what the requests already placed in line would take, so
    a queue that waits many requests deep does not keep the others behind it (ties: the head
    that waited longest).
    """
    lines: dict[str, list[Waiting]] = {}
    for w in sorted(waiting, key=lambda w: (-w.priority, w.since, w.owner)):
        lines.setdefault(w.queue, []).append(w)
    totals = quota_totals(queues)
    taken = {q: usage.get(q, Amounts()) for q in lines}
    share = {q: dominant_share(q, taken[q], queues, totals) for q in lines}
    result: list[Waiting] = []
    heads = {q: 0 for q in lines}
    count = sum(len(v) for v in lines.values())
    while len(result) < count:
        q = min((q for q in lines if heads[q] < len(lines[q])), key=lambda q: (share[q], lines[q][heads[q]].since, q))
        head = lines[q][heads[q]]
        result.append(head)
        heads[q] += 1
        taken[q] = taken[q] + head.request
        share[q] = dominant_share(q, taken[q], queues, totals)
    return result


def may_start(
    owner: str,
    line: Sequence[Waiting],
    usage: Mapping[str, Amounts],
    queues: Mapping[str, QueueSpec],
    fits: Callable[[Waiting], bool],
) -> bool:
    """Whether the waiter ``owner`` starts now: it is admitted and ``fits`` (a host of the pool
    has room for it), and no waiter ahead of it in ``line`` (:func:`order`) is admitted and
    fits too. A waiter that cannot start does not hold back those behind it; one that can
    goes first, so the line is kept across queues without a scheduler."""
    for w in line:
        ready = isinstance(admit(w.queue, w.request, usage, queues), Admitted) and fits(w)
        if w.owner == owner:
            return ready
        if ready:
            return False
    raise ValueError(f"{owner} is not in the line")


UNITS: Mapping[str, tuple[str, int]] = {"gpus": ("gpu_milli", 1000), "cpus": ("cpu_milli", 1000),
                                        "memory_mb": ("memory_mb", 1)}
"""The resource names a pool connection writes, as :data:`RESOURCES` and the factor to them:
people think in GPUs and CPUs (``"gpus": 0.5`` is half a GPU), the core counts in milli."""


def queues_from_extra(extra: Mapping[str, object], pool: str) -> tuple[QueueSetup, str | None] | None:
    """The queues a pool connection's extra declares, and its ``default_queue``; None when it
    declares none (the pool stays first come, first served).

    The extra reads ``{"hosts": [...], "queues": {"vision": {"quota": {"gpus": 8},
    "borrowing_limit": {"gpus": 4}, "lending_limit": {"gpus": 2}, "weight": 2}, ...},
    "default_queue": "vision"}``. Every mistake is a :class:`HostConfigError` naming the
    connection, the queue and the fix.
    """
    where = f"Pool connection {pool!r}"
    declared = extra.get("queues")
    if declared is None:
        if "default_queue" in extra:
            raise HostConfigError(f'{where}: "default_queue" is set but no "queues" are declared; declare the '
                                  'queues or drop "default_queue".')
        return None
    if not isinstance(declared, Mapping) or not declared:
        raise HostConfigError(f'{where}: "queues" must be an object of queue names to their quotas, e.g. '
                              f'{{"vision": {{"quota": {{"gpus": 8}}}}}}; got {declared!r}.')
    specs = []
    for name, doc in declared.items():
        if not isinstance(doc, Mapping) or "quota" not in doc:
            raise HostConfigError(f'{where}: queue {name!r} must be an object with a "quota", e.g. '
                                  f'{{"quota": {{"gpus": 8}}}}; got {doc!r}.')
        unknown = set(doc) - {"quota", "borrowing_limit", "lending_limit", "weight"}
        if unknown:
            raise HostConfigError(f"{where}: queue {name!r} has unknown keys {sorted(unknown)}; use quota, "
                                  "borrowing_limit, lending_limit and weight.")
        weight = doc.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise HostConfigError(f"{where}: queue {name!r}: weight={weight!r}; it must be a number > 0.")
        try:
            specs.append(QueueSpec(
                str(name), _limits(doc["quota"], "quota", name),
                None if doc.get("borrowing_limit") is None else _limits(doc["borrowing_limit"], "borrowing_limit", name),
                None if doc.get("lending_limit") is None else _limits(doc["lending_limit"], "lending_limit", name),
                float(weight)))
        except HostConfigError as exc:
            raise HostConfigError(f"{where}: {exc}") from None
    setup = QueueSetup(specs, pool=where)
    default = extra.get("default_queue")
    if default is not None and (not isinstance(default, str) or default not in setup):
        raise HostConfigError(f'{where}: "default_queue" is {default!r}, not one of its queues '
                              f"({', '.join(setup)}); name one of them.")
    return setup, default


def _limits(doc: object, what: str, queue: str) -> dict[str, int]:
    """One quota or limit object in the core's units: ``{"gpus": 1.5}`` is 1500 milli-GPUs."""
    if not isinstance(doc, Mapping) or not doc:
        raise HostConfigError(f"queue {queue!r}: {what} must be an object like {{\"gpus\": 8, \"cpus\": 32, "
                              f"\"memory_mb\": 262144}}; got {doc!r}")
    out: dict[str, int] = {}
    for key, amount in doc.items():
        if key not in UNITS:
            raise HostConfigError(f"queue {queue!r}: {what} names {key!r}; use {', '.join(UNITS)}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            raise HostConfigError(f"queue {queue!r}: {what} {key}={amount!r}; it must be a number >= 0")
        resource, factor = UNITS[key]
        out[resource] = round(amount * factor)
    return out


def usage_by_queue(taken: Iterable[tuple[str, Amounts]]) -> dict[str, Amounts]:
    """Each queue's usage: the sum of what its claims take, from ``(queue, amounts)`` pairs."""
    usage: dict[str, Amounts] = {}
    for queue, amounts in taken:
        usage[queue] = usage.get(queue, Amounts()) + amounts
    return usage
