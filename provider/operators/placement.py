"""Choose a host and GPUs from the pool and reserve them: snapshot, place, claim, retry.

This composes the hooks (:mod:`provider.hooks.pool_state`: agents' metrics, claims and holds
read from each engine) with the pure core (:func:`provider.scheduling.place`).

Between the snapshot and the claim another task may take the chosen GPU. The claim then
fails atomically (see :mod:`provider.hooks.reservations`) and placement runs again on a fresh
state, at most ``attempts`` times; after that the task fails with the no-fit message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provider.errors import ClaimTaken, NoFit
from provider.hooks.docker_host import GpuDockerHook
from provider.hooks.hosts import HostConfig
from provider.hooks.pool_state import lift_holds, read_pool_view
from provider.hooks.reservations import DEFAULT_GRACE_S, Reservation, Reservations, new_owner
from provider.scheduling import PlacementContext, get_policy, place
from provider.scheduling.model import Placement, PlacementRequest
from provider.scheduling.waiting import Waiter

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 8
"""More than the GPUs a contender can lose in a row on a small pool: each lost claim means
another task won that GPU, and the next snapshot shows it as taken."""


@dataclass(frozen=True, slots=True)
class Reserved:
    """Where a task will run, why, and the claims that hold its GPUs (None without GPUs)."""

    host: HostConfig
    placement: Placement
    reservation: Reservation | None


def place_and_reserve(
    hosts: Sequence[HostConfig],
    request: PlacementRequest,
    policy_name: str,
    *,
    image: str,
    pull: str,
    identity: Mapping[str, str],
    waiter: Waiter | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    agent_timeout: float = 2.0,
    grace_s: float = DEFAULT_GRACE_S,
    rng: random.Random | None = None,
) -> Reserved:
    """Place ``request`` on the pool and claim its GPUs there; raise :class:`NoFit` if none fits.

    ``waiter`` is the request's place in line when it has been waiting (None otherwise):
    hosts held for earlier waiters are not offered to it, and its own hold is lifted once
    it holds its GPUs. The image is made present on the chosen host before claiming,
    because the claim container is created from it and a long pull must not hold GPUs.
    """
    policy = get_policy(policy_name)
    context = PlacementContext(rng=rng or random.Random())
    by_name = {h.name: h for h in hosts}
    milli = min(request.gpu_milli, 1000)
    lost: list[str] = []
    for _ in range(attempts):
        view = asyncio.run(read_pool_view(hosts, waiter, agent_timeout=agent_timeout, grace_s=grace_s))
        placement = place(request, view.nodes, policy, context)
        host = by_name[placement.node]
        docker = GpuDockerHook(host)
        docker.ensure_image(image, pull)
        reservation = None
        if placement.gpu_indices:
            try:
                reservation = Reservations(docker).reserve(
                    placement.gpu_indices, milli, new_owner(), image, identity
                )
            except ClaimTaken as exc:
                log.info("Lost the claim race, placing again: %s", exc)
                lost.append(str(exc))
                continue
        if waiter is not None:
            mine = {h.hold.host for h in view.holds if h.hold.owner == waiter.owner}
            asyncio.run(lift_holds([by_name[name] for name in sorted(mine)], waiter.owner))
        return Reserved(host, placement, reservation)
    view = asyncio.run(read_pool_view(hosts, waiter, agent_timeout=agent_timeout, grace_s=grace_s))
    placement = place(request, view.nodes, policy, context)
    raise NoFit(request, {
        **placement.rejections,
        **{name: (f"fits, but {attempts} claims in a row were taken by concurrent tasks (last: {lost[-1]})",)
           for name in placement.scores},
    })


def release(reserved: Reserved) -> None:
    """Give the GPUs back; safe to call twice and after the claims were reclaimed."""
    if reserved.reservation is not None:
        Reservations(GpuDockerHook(reserved.host)).release(reserved.reservation)


def placement_record(reserved: Reserved) -> dict[str, Any]:
    """The XCom ``placement`` document: the choice and every candidate's score or reasons."""
    p = reserved.placement
    return {
        "host": p.node,
        "gpu_ids": list(p.gpu_indices),
        "policy": p.policy,
        "scores": dict(sorted(p.scores.items())),
        "rejections": {k: list(v) for k, v in sorted(p.rejections.items())},
        "owner": reserved.reservation.owner if reserved.reservation else None,
    }
