"""Queues on a pool, carried out on its hosts: the line, the admission lock, the claim's queue.

The pure core decides (:mod:`provider.scheduling.queues`, :mod:`provider.scheduling.line`);
this module feeds it what the hosts hold and acts on its answer, with no service of its own:

* **Usage** is the sum of the claims that name each queue (:meth:`PoolView.queue_usage`), read
  from the hosts like every reservation, so nothing a restart can lose.
* **The line.** A task that waits on a pool with queues keeps a *place in line* on the pool's
  first host that answers (a never-started container with its queue, priority, since when it
  waits and what it asks), renewed every poll and lapsing after :data:`LINE_LEASE_S` when its
  waiter is gone. Every reader sees every place, so each waiter works out the whole line and
  its own position by itself (:func:`line_answer`).
* **Admission** is ordered pool-wide by the *queue lock* on that same host
  (:data:`~provider.labels.QUEUE_LOCK_NAME`): holding it, a claimant reads every
  host's claims afresh, asks :func:`~provider.scheduling.queues.admit` once more and claims on
  its host (:func:`reserve_in_queue`). Two tasks of one queue on two hosts therefore cannot both
  take the quota's last GPU, which the per-host claim lock alone would allow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.errors import ClaimTaken, EngineError, HostConfigError
from provider.labels import QUEUE_LOCK_NAME
from provider.reservations.deployment import current_deployment
from provider.reservations.rules import PlaceInLine, line_labels, line_names
from provider.reservations.store import ClaimStore, EngineLock, Reservation
from provider.reservations.view import PoolView
from provider.scheduling.line import LineAnswer, place_in_line, room_taker
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.queues import Amounts, QueueSetup, QueueShort, Waiting, admit, queues_from_extra, usage_by_queue
from provider.task_instance import TaskInstanceRef

log = logging.getLogger(__name__)

LINE_LEASE_S = 90.0
"""How long a place in line lasts unless renewed: several polls of a waiting task (10 s by
default), and the time a task takes from its trigger's event to its claim."""


@dataclass(frozen=True, slots=True)
class QueueTicket:
    """What a task brings to a pool with queues: the pool's queues, the task's queue and priority.

    ``declared`` is the pool connection's extra as written (its ``queues``), kept so that the
    waiting trigger, which looks nothing up, gets the same queues in its kwargs.
    """

    pool: str
    declared: Mapping[str, Any]
    setup: QueueSetup
    queue: str
    priority: int

    @classmethod
    def of(cls, pool: str, declared: Mapping[str, Any], queue: str | None, priority: int) -> QueueTicket | None:
        """The ticket of a task naming ``queue`` (None: the pool's default) on a pool whose extra
        is ``declared``; None when the pool declares no queues and the task names none."""
        found = queues_from_extra(declared, pool)
        if found is None:
            if queue is not None:
                raise HostConfigError(f"gpu_queue={queue!r}, but pool connection {pool!r} declares no queues; "
                                      'declare them in its extra ("queues") or drop gpu_queue.')
            return None
        setup, default = found
        name = queue if queue is not None else default
        if name is None:
            raise HostConfigError(f"Pool connection {pool!r} shares its GPUs through queues ({', '.join(setup)}): "
                                  'pass gpu_queue=, or give the pool a "default_queue".')
        setup.known(name, f"pool connection {pool!r}")
        return cls(pool, {k: declared[k] for k in ("queues", "default_queue") if k in declared}, setup, name,
                   priority)

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "declared": dict(self.declared), "queue": self.queue, "priority": self.priority}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> QueueTicket:
        ticket = cls.of(doc["pool"], doc["declared"], doc["queue"], doc["priority"])
        assert ticket is not None
        return ticket


def line_answer(view: PoolView, ticket: QueueTicket, owner: str, since: float, request: PlacementRequest,
                fits: bool, task: TaskInstanceRef | None) -> LineAnswer:
    """Whether the task ``owner`` (waiting since ``since``; ``fits`` says whether its policy found
    a host for it now) starts now, among the places in line of its pool that ``view`` found.

    Each waiter ahead is judged on the hosts as *it* sees them: a hold of an earlier waiter
    applies to it, its own hold does not (:func:`~provider.scheduling.waiting.apply_holds`).
    """
    me = Waiting(owner, ticket.queue, ticket.priority, since, Amounts.of(request.resources), str(task or ""))
    places = pool_line(view, ticket)
    requests = {p.waiting.owner: p.request for p in places}
    requests[owner] = request
    take = room_taker([replace(n, held=None) for n in view.nodes], [h.hold for h in view.holds])

    def take_for(w: Waiting) -> bool:
        return (fits or w.owner != owner) and take(w, requests[w.owner])

    return place_in_line(me, [p.waiting for p in places], view.queue_usage(), ticket.setup, take_for)


def pool_line(view: PoolView, ticket: QueueTicket) -> list[PlaceInLine]:
    """The places in line of ``ticket``'s pool and queues, one per waiter (the oldest record of a
    waiter whose place was made again on another host while the first did not answer)."""
    found: dict[str, PlaceInLine] = {}
    for p in sorted(view.line, key=lambda p: p.expires):
        if p.pool == ticket.pool and p.waiting.queue in ticket.setup:
            found.setdefault(p.waiting.owner, p)
    return list(found.values())


def never_admitted(ticket: QueueTicket, request: PlacementRequest) -> QueueShort | None:
    """Why ``ticket``'s queue could not admit ``request`` even with nothing else running (it asks
    more than the queue's quota and borrowing limit, or than all queues lend): waiting would not
    help. None when an idle pool would admit it."""
    answer = admit(ticket.queue, Amounts.of(request.resources), {}, ticket.setup)
    return answer if isinstance(answer, QueueShort) else None


def check_quotas(view: PoolView, ticket: QueueTicket) -> None:
    """Refuse quotas larger than the pool, once every host has answered (before that the pool's
    size is not known, and a host that is down must not make a good setup look wrong; a host
    without an agent has no known capacity either). A host's GPUs count whether or not its
    engine can start GPU containers just now: a repair must not fail every queued task."""
    if any(n.unreachable is not None or n.unmeasured is not None for n in view.nodes):
        return
    ticket.setup.check_capacity(sum((Amounts(1000 * len(n.gpus), n.cpu_milli, n.memory_mb) for n in view.nodes),
                                    Amounts()))


def anchor(hosts: Sequence[HostConfig], view: PoolView) -> HostConfig | None:
    """The host that keeps the pool's places in line: its first host that answered."""
    reachable = {n.name for n in view.nodes if n.unreachable is None}
    return next((h for h in hosts if h.name in reachable), None)


async def reserve_in_queue(
    hosts: Sequence[HostConfig], host: HostConfig, node: NodeState, request: PlacementRequest,
    gpu_ids: Sequence[int], owner: str, image: str, task: TaskInstanceRef | None, ticket: QueueTicket,
) -> Reservation:
    """Claim on ``host`` for ``ticket``'s queue, admitted again under the pool's queue lock on
    every host's claims as they are now. :class:`ClaimTaken` when the queue no longer admits it
    (a concurrent task of the pool took the quota meanwhile): the caller places again.

    The claim is checked once more after it is made, as if it were the youngest, like a claim on
    one host (:meth:`ClaimStore._conflict`): should the queue lock have been broken under a live
    holder, or two claimants have found different first hosts, of two claims that together
    exceed the quota the one that lists second takes its claim back.
    """
    lock, held = await _queue_lock(hosts, image)
    try:
        taken = Amounts.of(request.resources)
        answer = admit(ticket.queue, taken, await _usage_now(hosts), ticket.setup)
        if isinstance(answer, QueueShort):
            raise ClaimTaken(f"a concurrent task took the room meanwhile ({answer})")
        store = ClaimStore(AsyncEngine(host))
        reservation = await store.reserve(node, request, gpu_ids, owner, image, task, queue=ticket.queue)
        try:
            after = admit(ticket.queue, taken, await _usage_now(hosts, reservation.claim_id), ticket.setup)
        except BaseException:
            await store.release(reservation)
            raise
        if isinstance(after, QueueShort):
            await store.release(reservation)
            raise ClaimTaken(f"a concurrent task took the room meanwhile ({after})")
        return reservation
    finally:
        await lock.release(held)


async def _queue_lock(hosts: Sequence[HostConfig], image: str) -> tuple[EngineLock, str]:
    """The pool's queue lock, on its first host whose engine answers."""
    problems = []
    for host in hosts:
        lock = EngineLock(AsyncEngine(host), QUEUE_LOCK_NAME, "queue lock", current_deployment())
        try:
            return lock, await lock.acquire(image)
        except EngineError as exc:
            problems.append(f"{host.name}: {exc}")
    raise ClaimTaken(f"no engine of the pool could keep its queue lock ({'; '.join(problems)})")


async def _usage_now(hosts: Sequence[HostConfig], without: str | None = None) -> dict[str, Amounts]:
    """Each queue's usage from every host's claims, listed now (``without`` that claim). Every
    engine is asked, whatever its agent answered; an engine that does not answer counts none of
    its claims (docs/queues.md, "Limits"). Only this deployment's claims count against its queues."""
    listed = await asyncio.gather(*(ClaimStore(AsyncEngine(h)).own_claims() for h in hosts), return_exceptions=True)
    return usage_by_queue((c.queue, Amounts.of(c.resources)) for claims in listed if not isinstance(claims, BaseException)
                          for c in claims if c.queue is not None and c.malformed is None and c.container_id != without)


def lease_s(poll_interval: float) -> float:
    """How long a place in line lasts: :data:`LINE_LEASE_S`, or three polls of a slower waiter."""
    return max(LINE_LEASE_S, 3 * poll_interval)


async def keep_place(
    hosts: Sequence[HostConfig], view: PoolView, waiting: Waiting, request: PlacementRequest,
    task: TaskInstanceRef, image: str, pool: str, lease: float, renew: bool = False,
) -> None:
    """Put ``waiting``'s place in line on the pool's first host that answers, or renew it when
    less than half its ``lease`` is left on its engine's clock or ``renew`` asks (made again and
    the old one removed after: a container's labels are fixed, and a task behind the waiter
    that read the line in between would otherwise find it gone and start first)."""
    mine = [p for p in view.line if p.waiting.owner == waiting.owner]
    left = [view.left_s(p) for p in mine]
    if mine and not renew and all(s is not None and s > lease / 2 for s in left):
        return
    keeper = anchor(hosts, view)
    if keeper is None:
        return
    labels = line_labels(waiting, request, lease, task, pool, deployment=current_deployment())
    for name in line_names(waiting.owner):
        if await AsyncEngine(keeper).create_idle(name, image, labels) is not None:
            break
    else:
        log.warning("The places in line of %s on %s exist already (a second reader made them); kept",
                    waiting.task or waiting.owner, keeper.name)
        return
    by_name = {h.name: h for h in hosts}
    for place in mine:
        await AsyncEngine(by_name[place.host]).remove(place.container_id)


def line_hosts(hosts: Sequence[HostConfig], view: PoolView) -> list[HostConfig]:
    """Where a waiter's place in line can be: the pool's hosts up to its first that answered
    (a place made while an earlier host did not answer stays there until removed)."""
    keeper = anchor(hosts, view)
    return list(hosts) if keeper is None else list(hosts[: list(hosts).index(keeper) + 1])
