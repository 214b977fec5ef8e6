"""Claims, holds and the claim lock, kept on each host's engine as never-started containers.

A never-started container uses no CPU, memory or GPU, survives any worker, and every worker
sees it by listing the engine's containers: no database or lock service is needed, and the
state lives where the resources are (``docs/reservations.md``).

Claiming on one host is ordered by a **lock**, the container ``gpu-docker-lock``: the engine
refuses a second container of a name (HTTP 409) atomically, whatever the claimants' clocks say.
Holding it, a claimant lists the host's claims, folds them through the accounting
(:func:`provider.reservations.rules.allocation`), checks that its request fits on top, creates
its claim, and lists again: the claim stays only if it fits on top of every other claim listed,
as if it were the youngest (:meth:`ClaimStore._conflict`). So even a lock broken under a live
holder (it is broken only after ``LOCK_STALE_S`` by the engine's clock) cannot let two
conflicting claims both proceed, and a host is never overcommitted, in GPUs, CPUs or memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from provider.errors import ClaimTaken, EngineError
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.labels import (
    CLAIM_LABEL,
    DEPLOYMENT_LABEL,
    LOCK_LABEL,
    LOCK_NAME,
    PROBLEM_NAME,
    RESERVATION_LABEL,
)
from provider.reservations.deployment import current_deployment
from provider.reservations.engine_clock import engine_seconds
from provider.reservations.strict import MAX_LEASE_S
from provider.reservations.rules import (
    Claim,
    allocation,
    claim_labels,
    claim_name,
    claim_shortfalls,
    hold_labels,
    hold_name,
    line_names,
    parse_claim,
    problem_labels,
    reserves_anything,
    unreserved,
)
from provider.reservations.view import PoolView
from provider.scheduling.model import NodeState, PlacementRequest, Resources
from provider.scheduling.waiting import Waiter, hold_host, is_due
from provider.task_instance import TaskInstanceRef

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 120.0
"""A claim older than this whose task runs nowhere is stale: the window from claim to start."""
LOCK_STALE_S = 150.0
"""A lock older than this belongs to a dead claimant and is broken: well above the longest a
live holder can take (three engine calls of at most 3 x 10 s each)."""
LOCK_WAIT_S = 180.0
"""How long a claimant waits for the lock before it gives up and places again: longer than a
dead claimant's lock lasts."""
PROBLEM_TTL_S = 600.0
"""How long a host whose engine could not start a GPU container is offered no GPU work."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one task holds on one host: its claim (None when it reserves nothing)."""

    host: str
    owner: str
    gpu_ids: tuple[int, ...]
    claim_id: str | None


def new_owner() -> str:
    """A fresh owner token: unique per placement attempt, valid in a container name."""
    return uuid.uuid4().hex[:16]


class EngineLock:
    """A lock kept on one engine as a never-started container of a fixed name: the engine
    refuses a second container of that name (HTTP 409) atomically, whatever the claimants'
    clocks say. A lock older than ``LOCK_STALE_S`` by the engine's own clock belongs to a
    claimant that is gone and is broken, by id.

    :param engine: the engine that keeps the lock.
    :param name: the lock's container name (:data:`LOCK_NAME` per host, :data:`QUEUE_LOCK_NAME` per pool).
    :param what: the lock in words, for messages.
    :param deployment: the deployment of its holder, on its label. Every deployment sharing the
        engine takes the same lock: their claims on one engine are ordered like any others.
    """

    def __init__(self, engine: AsyncEngine, name: str, what: str, deployment: str) -> None:
        self.engine = engine
        self.name = name
        self.what = what
        self.deployment = deployment

    async def acquire(self, image: str) -> str:
        """Hold the lock; its container id.

        Contenders back off exponentially (20 ms to 0.5 s, with jitter) so that a crowd of
        waiting claimants does not flood the engine with refused creates.
        """
        deadline = time.monotonic() + LOCK_WAIT_S
        labels = {RESERVATION_LABEL: "lock", LOCK_LABEL: "true", DEPLOYMENT_LABEL: self.deployment}
        pause = 0.02
        while True:
            lock = await self.engine.create_idle(self.name, image, labels)
            if lock is not None:
                return lock
            if await self._break_if_stale():
                continue
            if time.monotonic() > deadline:
                raise ClaimTaken(
                    f"{self.engine.host.name}: the {self.what} stayed busy for {LOCK_WAIT_S:g} s (many tasks "
                    "claiming at once, or an engine answering slowly)"
                )
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(0.5, pause * 2)

    async def release(self, lock: str) -> None:
        try:
            await self.engine.remove(lock)
        except EngineError as exc:  # it lapses after LOCK_STALE_S
            log.warning("Could not remove the %s on %s: %s", self.what, self.engine.host.name, exc)

    async def _break_if_stale(self) -> bool:
        """Remove the lock if its holder is gone; whether the lock is free now.

        Its age is measured on the engine's own clock (when it created the lock, and its time
        now), so no two workers' clocks are compared.
        """
        doc = await self.engine.inspect(self.name)
        if doc is None:
            return True
        now, created = engine_seconds((await self.engine.info()).get("SystemTime")), engine_seconds(doc.get("Created"))
        if now is None or created is None or now - created <= LOCK_STALE_S:
            return False
        age = now - created
        log.warning("Breaking the %s on %s, held for %.0f s by a claimant that is gone",
                    self.what, self.engine.host.name, age)
        await self.engine.remove(str(doc["Id"]))  # by id: a fresh lock of the same name stays
        return True


class ClaimStore:
    """The claims on one host's engine.

    :param engine: the host's engine client.
    :param deployment: the deployment whose claims it makes (None: this process's,
        :func:`~provider.reservations.deployment.current_deployment`).
    """

    def __init__(self, engine: AsyncEngine, deployment: str | None = None) -> None:
        self.engine = engine
        self.deployment = deployment or current_deployment()

    async def claims(self) -> list[Claim]:
        """Every deployment's claims on the engine: all of them take its capacity."""
        return [c for c in map(parse_claim, await self.engine.containers([f"{CLAIM_LABEL}=true"])) if c is not None]

    async def own_claims(self) -> list[Claim]:
        """This store's deployment's claims: the only ones it adopts, releases or counts against its queues."""
        return [c for c in await self.claims() if c.deployment == self.deployment]

    async def reserve(
        self, node: NodeState, request: PlacementRequest, gpu_ids: Sequence[int], owner: str, image: str,
        task: TaskInstanceRef | None, queue: str | None = None,
    ) -> Reservation:
        """Claim ``request`` on ``gpu_ids`` of ``node`` (its capacity as the agent reported it),
        counted against ``queue`` on a pool with queues.

        Raises :class:`ClaimTaken` when it no longer fits; nothing is left behind then.
        """
        gpus = tuple(sorted(gpu_ids))
        host = self.engine.host.name
        if not reserves_anything(request):
            return Reservation(host, owner, gpus, None)
        taken = request.resources
        capacity = unreserved(node)
        lock = EngineLock(self.engine, LOCK_NAME, "claim lock", self.deployment)
        held = await lock.acquire(image)
        try:
            why = claim_shortfalls(allocation(capacity, await self.claims()).node, taken, gpus)
            if why:
                raise ClaimTaken(f"{host}: {'; '.join(map(str, why))}")
            labels = claim_labels(taken, gpus, owner, task, queue, deployment=self.deployment)
            claim_id = await self.engine.create_idle(claim_name(owner), image, labels)
            if claim_id is None:
                raise ClaimTaken(f"{host}: a claim of owner {owner} exists already")
            try:
                conflict = self._conflict(capacity, await self.claims(), claim_id, taken, gpus)
            except BaseException:
                await self.engine.remove(claim_id)
                raise
            if conflict:
                await self.engine.remove(claim_id)
                raise ClaimTaken(f"{host}: {conflict}")
        finally:
            await lock.release(held)
        return Reservation(host, owner, gpus, claim_id)

    @staticmethod
    def _conflict(
        capacity: NodeState, claims: Sequence[Claim], claim_id: str, taken: Resources, gpus: tuple[int, ...]
    ) -> str | None:
        """Why the claim just made must be taken back; None when it may stay.

        It stays only if it fits on top of *every* other claim listed (every deployment's), as if
        it were the youngest, whatever the engine's clock says of their ages. Of two claims that conflict, whichever
        claimant lists second sees both and backs off, so at most one of them ever proceeds (and
        should both list both, both back off and place again).
        """
        others = allocation(capacity, [c for c in claims if c.container_id != claim_id])
        if others.refused:
            return "claims made meanwhile conflict on this host"
        why = claim_shortfalls(others.node, taken, gpus)
        return f"another claim took the room meanwhile ({'; '.join(map(str, why))})" if why else None

    async def release(self, reservation: Reservation) -> None:
        """Remove the claim (one already reclaimed is fine)."""
        if reservation.claim_id is not None:
            await self.engine.remove(reservation.claim_id)

async def put_hold(
    host: HostConfig, owner: str, since: float, lease_s: float, image: str, task: TaskInstanceRef
) -> None:
    """Hold ``host`` for the waiter ``owner`` for ``lease_s`` on the engine's clock (a second
    hold of the same owner is refused)."""
    labels = hold_labels(owner, since, lease_s, task, deployment=current_deployment())
    await AsyncEngine(host).create_idle(hold_name(owner), image, labels)


async def mark_gpu_problem(host: HostConfig, reason: str, image: str) -> None:
    """Remember on ``host`` that its engine could not start a GPU container, for ``PROBLEM_TTL_S``.

    The next reads of the pool offer the host no GPU work (its CPU work goes on), so a retry is
    placed elsewhere instead of failing on the same host again; a marker that exists already is
    kept.
    """
    labels = problem_labels(reason, PROBLEM_TTL_S, deployment=current_deployment())
    await AsyncEngine(host).create_idle(PROBLEM_NAME, image, labels)


async def lift_holds(hosts: Iterable[HostConfig], owner: str) -> None:
    """Remove ``owner``'s hold and place in line (it has its resources, or stopped waiting) from
    each of ``hosts``.

    Both are named after their owner, so they are removed by name without reading anything
    first; a host without them answers 404, which is fine. A host that does not answer keeps
    them until they lapse.
    """
    targets = [(h, name) for h in hosts for name in (hold_name(owner), *line_names(owner))]
    results = await asyncio.gather(*(AsyncEngine(h).remove(name) for h, name in targets), return_exceptions=True)
    for (host, name), result in zip(targets, results):
        if isinstance(result, Exception):
            log.warning("Could not remove %s from %s (%s); it lapses by itself", name, host.name, result)


async def hold_if_due(
    hosts: Mapping[str, HostConfig],
    view: PoolView,
    request: PlacementRequest,
    waiter: Waiter,
    *,
    hold_after_s: float | None,
    expires: float,
    image: str,
    task: TaskInstanceRef,
    now: float,
) -> str | None:
    """Put ``waiter``'s hold on a host once it is due; the host it holds, or None.

    A waiter keeps the first host it held (the hold is found again on the next read), so
    the host it drains does not change under it. The hold lasts until ``expires`` (the end of
    the wait, on this worker's clock, as ``now``): it is written as the time left, which the
    engine's clock counts down.
    """
    own = [h.hold.host for h in view.holds if h.hold.owner == waiter.owner]
    if own:
        return own[0]
    if not is_due(waiter, now, hold_after_s):
        return None
    target = hold_host(request, view.nodes)
    if target is None:
        return None
    await put_hold(hosts[target], waiter.owner, waiter.since, min(MAX_LEASE_S, max(1.0, expires - now)), image, task)
    log.info("Waited since %s: holding host %s until this request fits there", waiter.since, target)
    return target
