"""Place a request on the pool and reserve it there: read, decide, claim, and again on a lost race.

Between the read and the claim another task may take the chosen resources. The claim then
fails (:class:`~provider.errors.ClaimTaken`, see :mod:`provider.reservations.store`) and
placement runs again on a fresh read, at most ``attempts`` times; after that the task fails
with the no-fit message. The operator calls this from its worker (the one place where synchronous code enters the
reservation layer, which is asyncio throughout); the trigger only asks
:func:`~provider.reservations.room.room` and leaves claiming to the task.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provider.errors import ClaimTaken

from provider.scheduling.no_fit import NoFit
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.reservations.pool import read_pool_view
from provider.reservations.queueing import (
    QueueTicket,
    check_quotas,
    line_answer,
    line_hosts,
    never_admitted,
    reserve_in_queue,
)
from provider.reservations.room import Room, Verdict, room
from provider.reservations.store import DEFAULT_GRACE_S, ClaimStore, Reservation, lift_holds, new_owner
from provider.reservations.view import PoolView
from provider.scheduling import PlacementContext, get_policy
from provider.scheduling.line import LineAnswer
from provider.scheduling.model import PlacementRequest
from provider.scheduling.place import Placement
from provider.scheduling.policies import DEFAULT_PULL_PENALTY_PER_GB
from provider.scheduling.reasons import Reason
from provider.scheduling.waiting import Waiter
from provider.task_instance import TaskInstanceRef
from provider.limits import AGENT_TIMEOUT_S

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 8
"""More than the claims a contender can lose in a row on a small pool: each lost claim means
another task won that room, and the next read shows it as taken."""


@dataclass(frozen=True, slots=True)
class ClaimsLost(Reason):
    """The host fits, but concurrent tasks took the room first at every claim of the task."""

    attempts: int
    last: str
    """The last lost claim's message."""

    def __str__(self) -> str:
        return f"fits, but {self.attempts} claims in a row were taken by concurrent tasks (last: {self.last})"


@dataclass(frozen=True, slots=True)
class Reserved:
    """Where a task will run, why, and the claim that holds its resources there."""

    host: HostConfig
    placement: Placement
    reservation: Reservation
    unmeasured: str | None = None
    pull_bytes: Mapping[str, int | None] = field(default_factory=dict)
    """Per host, what its engine would have had to pull for the task's image (the locality term)."""
    line: LineAnswer | None = None
    """On a pool with queues, the task's queue and place in line when it was admitted."""


async def place_and_reserve(
    hosts: Sequence[HostConfig],
    request: PlacementRequest,
    policy_name: str,
    *,
    image: str,
    task: TaskInstanceRef | None = None,
    prepare: Callable[[HostConfig], None] = lambda host: None,
    waiter: Waiter | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    agent_timeout: float = AGENT_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
    rng: random.Random | None = None,
    pull_penalty_per_gb: float = DEFAULT_PULL_PENALTY_PER_GB,
    ticket: QueueTicket | None = None,
    on_claim_lost: Callable[[str], None] = lambda host: None,
) -> Reserved:
    """Place ``request`` on the pool and claim it on the chosen host for ``task`` (None: a claim
    that names no task instance); :class:`NoFit` (with the holders of each busy host) if none fits.

    ``prepare`` readies the chosen host before claiming (the operator makes the image present
    there: the claim is created from it, and a long pull must not hold resources); it blocks,
    so it runs in a thread. ``waiter`` is the request's place in line when it has been waiting
    (None otherwise): hosts held for earlier waiters are not offered to it, and its own hold is
    lifted once it has its claim. With ``pull_penalty_per_gb`` above 0, every engine is asked
    whether it has ``image``, and hosts that would have to pull it lose that many points per GB.
    With ``ticket`` (a pool with queues), the task must also be admitted by its queue and be
    first in line among those that could start (:mod:`provider.reservations.queueing`); else
    :class:`NoFit` says its place in line and what it waits for. ``on_claim_lost`` is told the
    host of every claim that lost its race, before placement reads the pool again (the operator
    counts them in Airflow's metrics; this layer knows no Airflow).
    """
    policy = get_policy(policy_name)
    context = PlacementContext(rng=rng or random.Random(), pull_penalty_per_gb=pull_penalty_per_gb)
    locality = image if pull_penalty_per_gb > 0 else None
    by_name = {h.name: h for h in hosts}
    lost: list[str] = []
    for _ in range(attempts):
        view = await read_pool_view(hosts, waiter, agent_timeout=agent_timeout, grace_s=grace_s, image=locality)
        answer = room(request, view, policy, context)
        line = None if ticket is None else _in_line(view, ticket, request, answer, waiter, task)
        if answer.placement is None:
            assert answer.no_fit is not None
            raise answer.no_fit
        placement = answer.placement
        host = by_name[placement.node]
        await asyncio.to_thread(prepare, host)
        node = next(n for n in view.nodes if n.name == host.name)
        try:
            if ticket is None:
                reservation = await ClaimStore(AsyncEngine(host)).reserve(
                    node, request, placement.gpu_indices, new_owner(), image, task)
            else:
                reservation = await reserve_in_queue(
                    hosts, host, node, request, placement.gpu_indices, new_owner(), image, task, ticket)
        except ClaimTaken as exc:
            log.info("Lost the claim race, placing again: %s", exc)
            lost.append(str(exc))
            on_claim_lost(host.name)
            continue
        if waiter is not None:
            lift = {h.name for h in line_hosts(hosts, view)} if ticket is not None else set()
            await lift_holds([h for h in hosts if h.name in lift | _held_by(view, waiter)], waiter.owner)
        return Reserved(host, placement, reservation, node.unmeasured,
                        {n.name: n.pull_bytes for n in view.nodes if locality and n.unreachable is None}, line)
    view = await read_pool_view(hosts, waiter, agent_timeout=agent_timeout, grace_s=grace_s)
    answer = room(request, view, policy, context)
    if answer.no_fit is not None:
        raise answer.no_fit
    assert answer.placement is not None
    rejections: dict[str, tuple[Reason, ...]] = dict(answer.placement.rejections)
    for name in answer.placement.scores:
        rejections[name] = (ClaimsLost(attempts, lost[-1]),)
    raise NoFit(request, rejections, view.holders())


def _in_line(view: PoolView, ticket: QueueTicket, request: PlacementRequest, answer: Room, waiter: Waiter | None,
             task: TaskInstanceRef | None) -> LineAnswer:
    """The task's place in line; :class:`NoFit` with it when the task may not start now. A task
    that never fits is told so first: no queue can help it."""
    check_quotas(view, ticket)
    if answer.verdict is Verdict.NEVER:
        assert answer.no_fit is not None
        raise answer.no_fit
    never = never_admitted(ticket, request)
    if never is not None:
        raise NoFit(request, {}, never=True, line=f"{never}, even with nothing else running. Ask for less, or raise "
                                                  f"the queue's quota or borrowing limit in pool connection "
                                                  f"{ticket.pool!r}")
    waiting = waiter or Waiter(new_owner(), time.time())
    line = line_answer(view, ticket, waiting.owner, waiting.since, request, answer.placement is not None, task)
    if not line.start:
        rejections = answer.no_fit.rejections if answer.no_fit is not None else {}
        raise NoFit(request, rejections, view.holders(), line=str(line))
    return line


def _held_by(view: PoolView, waiter: Waiter) -> set[str]:
    """The hosts that keep ``waiter``'s hold or place in line."""
    return {h.hold.host for h in view.holds if h.hold.owner == waiter.owner} | \
        {p.host for p in view.line if p.waiting.owner == waiter.owner}


async def release(reserved: Reserved) -> None:
    """Give the resources back; safe to call twice and after the claim was reclaimed."""
    await ClaimStore(AsyncEngine(reserved.host)).release(reserved.reservation)


def placement_record(reserved: Reserved) -> dict[str, Any]:
    """The XCom ``placement`` document: the choice and every candidate's score or reasons."""
    p = reserved.placement
    return {
        "host": p.node,
        "gpu_ids": list(p.gpu_indices),
        "policy": p.policy,
        "scores": dict(sorted(p.scores.items())),
        "rejections": _worded(p.rejections),
        "owner": reserved.reservation.owner,
        "unmeasured": reserved.unmeasured,
        "pull_bytes": dict(sorted(reserved.pull_bytes.items())),
        "queue": None if reserved.line is None else reserved.line.as_record(),
    }


def _worded(rejections: Mapping[str, tuple[Reason, ...]]) -> dict[str, list[str]]:
    """Each host's reasons in words, as the XCom and the pages show them."""
    return {k: [str(r) for r in v] for k, v in sorted(rejections.items())}


def no_fit_record(no_fit: NoFit, policy: str) -> dict[str, Any]:
    """The XCom ``placement`` document when nothing fits: every host's reasons, who holds each
    busy host, and whether waiting could help (``never``: no host could take it even empty)."""
    return {
        "host": None,
        "gpu_ids": [],
        "policy": policy,
        "scores": {},
        "rejections": _worded(no_fit.rejections),
        "holders": {k: list(v) for k, v in sorted(no_fit.holders.items())},
        "never": no_fit.never,
        "owner": None,
        "unmeasured": None,
        "queue": no_fit.line or None,
    }
