"""Claims, holds and the claim lock, kept on each host's engine as never-started containers.

A never-started container uses no CPU, memory or GPU, survives any worker, and every worker
sees it by listing the engine's containers: no database or lock service is needed, and the
state lives where the resources are (``docs/reservations.md``).

Claiming on one host is ordered by a **lock**, the container ``gpu-docker-claim-lock``: the
engine refuses a second container of a name (HTTP 409) atomically, whatever the claimants'
clocks say. Holding it, a claimant lists the host's claims, folds them through the
accounting (:func:`provider.reservations.rules.allocation`), checks that its request fits on
top, and creates its claim. It then lists again and verifies that the fold counts its claim:
should a lock ever be broken under a live holder (it is broken only after ``LOCK_STALE_S``),
the later of two overcommitting claims is refused and taken back, so a host is never
overcommitted, in GPUs, CPUs or memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from provider.errors import ClaimTaken, EngineError
from provider.hooks.engine import AsyncEngine
from provider.hooks.hosts import HostConfig
from provider.reservations.labels import (
    CLAIM_LABEL,
    CREATED_LABEL,
    LOCK_LABEL,
    LOCK_NAME,
    PROBLEM_NAME,
    RESERVATION_LABEL,
)
from provider.reservations.rules import (
    Claim,
    allocation,
    claim_labels,
    claim_name,
    hold_labels,
    hold_name,
    overcommit,
    parse_claim,
    problem_labels,
    reserved_request,
    reserves_anything,
    unreserved,
)
from provider.reservations.view import PoolView
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.waiting import Waiter, hold_host, is_due

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 120.0
"""A claim older than this whose task runs nowhere is stale: the window from claim to start."""
LOCK_STALE_S = 30.0
"""A lock older than this belongs to a dead claimant and is broken."""
LOCK_WAIT_S = 30.0
"""How long a claimant waits for the lock before it gives up and places again."""
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


class ClaimStore:
    """The claims on one host's engine.

    :param engine: the host's engine client.
    :param clock: wall-clock seconds; claims and locks compare times written by different workers.
    """

    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    async def claims(self) -> list[Claim]:
        return [c for c in map(parse_claim, await self.engine.containers([f"{CLAIM_LABEL}=true"])) if c is not None]

    async def reserve(
        self, node: NodeState, request: PlacementRequest, gpu_ids: Sequence[int], owner: str, image: str,
        identity: Mapping[str, str],
    ) -> Reservation:
        """Claim ``request`` on ``gpu_ids`` of ``node`` (its capacity as the agent reported it).

        Raises :class:`ClaimTaken` when it no longer fits; nothing is left behind then.
        """
        gpus = tuple(sorted(gpu_ids))
        host = self.engine.host.name
        if not reserves_anything(request):
            return Reservation(host, owner, gpus, None)
        taken = reserved_request(len(gpus), request.gpu_milli, request.cpu_milli, request.memory_mb)
        capacity = unreserved(node)
        lock = await self._lock(image)
        try:
            why = overcommit(allocation(capacity, await self.claims()).node, taken, gpus)
            if why:
                raise ClaimTaken(f"{host}: {why}")
            labels = claim_labels(taken, gpus, owner, self.clock(), identity)
            claim_id = await self.engine.create_idle(claim_name(owner), image, labels)
            if claim_id is None:
                raise ClaimTaken(f"{host}: a claim of owner {owner} exists already")
            try:
                refused = allocation(capacity, await self.claims()).refused
            except BaseException:
                await self.engine.remove(claim_id)
                raise
            if any(c.container_id == claim_id for c in refused):
                await self.engine.remove(claim_id)
                raise ClaimTaken(f"{host}: an earlier claim took the room meanwhile")
        finally:
            await self._unlock(lock)
        return Reservation(host, owner, gpus, claim_id)

    async def release(self, reservation: Reservation) -> None:
        """Remove the claim (one already reclaimed is fine)."""
        if reservation.claim_id is not None:
            await self.engine.remove(reservation.claim_id)

    async def _lock(self, image: str) -> str:
        """Hold the host's claim lock; a lock older than ``LOCK_STALE_S`` is broken, by id."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            labels = {RESERVATION_LABEL: "lock", LOCK_LABEL: "true", CREATED_LABEL: f"{self.clock():.3f}"}
            lock = await self.engine.create_idle(LOCK_NAME, image, labels)
            if lock is not None:
                return lock
            await self._break_if_stale()
            if time.monotonic() > deadline:
                raise ClaimTaken(
                    f"{self.engine.host.name}: the claim lock stayed busy for {LOCK_WAIT_S:g} s (many tasks "
                    "claiming at once, or an engine answering slowly)"
                )
            await asyncio.sleep(0.02)

    async def _unlock(self, lock: str) -> None:
        try:
            await self.engine.remove(lock)
        except EngineError as exc:  # it lapses after LOCK_STALE_S
            log.warning("Could not remove the claim lock on %s: %s", self.engine.host.name, exc)

    async def _break_if_stale(self) -> None:
        doc = await self.engine.inspect(LOCK_NAME)
        if doc is None:
            return
        labels = (doc.get("Config") or {}).get("Labels") or {}
        if self.clock() - float(labels.get(CREATED_LABEL, "0")) > LOCK_STALE_S:
            log.warning("Breaking the stale claim lock on %s", self.engine.host.name)
            await self.engine.remove(str(doc["Id"]))  # by id: a fresh lock of the same name stays


async def put_hold(
    host: HostConfig, owner: str, since: float, expires: float, image: str, identity: Mapping[str, str]
) -> None:
    """Hold ``host`` for the waiter ``owner`` (a second hold of the same owner is refused)."""
    await AsyncEngine(host).create_idle(hold_name(owner), image, hold_labels(owner, since, expires, identity))


async def mark_gpu_problem(host: HostConfig, reason: str, image: str, now: float) -> None:
    """Remember on ``host`` that its engine could not start a GPU container, for ``PROBLEM_TTL_S``.

    The next reads of the pool offer the host no GPU work (its CPU work goes on), so a retry is
    placed elsewhere instead of failing on the same host again; a marker that exists already is
    kept.
    """
    await AsyncEngine(host).create_idle(PROBLEM_NAME, image, problem_labels(reason, now + PROBLEM_TTL_S))


async def lift_holds(hosts: Iterable[HostConfig], owner: str) -> None:
    """Remove ``owner``'s hold (it has its resources, or stopped waiting) from each of ``hosts``.

    A hold is named after its owner, so it is removed by name without reading anything first;
    a host without it answers 404, which is fine. A host that does not answer keeps the hold
    until it lapses.
    """
    targets = list(hosts)
    results = await asyncio.gather(*(AsyncEngine(h).remove(hold_name(owner)) for h in targets),
                                   return_exceptions=True)
    for host, result in zip(targets, results):
        if isinstance(result, Exception):
            log.warning("Could not lift the hold on %s (%s); it lapses by itself", host.name, result)


async def hold_if_due(
    hosts: Mapping[str, HostConfig],
    view: PoolView,
    request: PlacementRequest,
    waiter: Waiter,
    *,
    hold_after_s: float | None,
    expires: float,
    image: str,
    identity: Mapping[str, str],
    now: float,
) -> str | None:
    """Put ``waiter``'s hold on a host once it is due; the host it holds, or None.

    A waiter keeps the first host it held (the hold is found again on the next read), so
    the host it drains does not change under it.
    """
    own = [h.hold.host for h in view.holds if h.hold.owner == waiter.owner]
    if own:
        return own[0]
    if not is_due(waiter, now, hold_after_s):
        return None
    target = hold_host(request, view.nodes)
    if target is None:
        return None
    await put_hold(hosts[target], waiter.owner, waiter.since, expires, image, identity)
    log.info("Waited since %s: holding host %s until this request fits there", waiter.since, target)
    return target
