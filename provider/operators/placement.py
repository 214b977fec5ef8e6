"""Choose a host and GPUs from the pool and reserve them: snapshot, place, claim, retry.

This composes the hooks (agents' metrics, reservations read from each engine) with the pure
core (:func:`provider.scheduling.place`). The state placement sees is the agents' snapshot
with every GPU's ``allocated_milli`` taken from the claims on its host, so a GPU reserved a
second ago counts as busy although its utilisation has not moved yet. A host whose agent or
engine does not answer stays in the list as unreachable, with the reason, and is skipped.

Between the snapshot and the claim another task may take the chosen GPU. The claim then
fails atomically (see :mod:`provider.hooks.reservations`) and placement runs again on a fresh
state, at most ``attempts`` times; after that the task fails with the no-fit message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import requests
from docker.errors import DockerException

from provider.hooks.claim_rules import with_claims
from provider.hooks.docker_host import GpuDockerHook, HostUnreachable
from provider.hooks.hosts import HostConfig
from provider.hooks.node_metrics import NodeMetricsHook
from provider.hooks.reservations import DEFAULT_GRACE_S, ClaimTaken, Reservation, Reservations, new_owner
from provider.scheduling import PlacementContext, get_policy, place
from provider.scheduling.model import NodeState, NoFit, Placement, PlacementRequest

log = logging.getLogger(__name__)

ENGINE_TIMEOUT_S = 10.0
"""Seconds an engine may take to list its claims; engines answer slower than agents under load."""

DEFAULT_ATTEMPTS = 8
"""More than the GPUs a contender can lose in a row on a small pool: each lost claim means
another task won that GPU, and the next snapshot shows it as taken."""


@dataclass(frozen=True, slots=True)
class Reserved:
    """Where a task will run, why, and the claims that hold its GPUs (None without GPUs)."""

    host: HostConfig
    placement: Placement
    reservation: Reservation | None


def pool_state(hosts: Sequence[HostConfig], agent_timeout: float, grace_s: float) -> list[NodeState]:
    """The agents' snapshot with each host's reservations applied (stale ones reclaimed)."""
    nodes = NodeMetricsHook(hosts=hosts, timeout=agent_timeout).snapshot()
    by_name = {h.name: h for h in hosts}
    with ThreadPoolExecutor(max_workers=min(32, len(nodes)) or 1) as pool:
        return list(pool.map(lambda n: _with_reservations(by_name[n.name], n, grace_s), nodes))


def _with_reservations(host: HostConfig, node: NodeState, grace_s: float) -> NodeState:
    if node.unreachable is not None:
        return node
    try:
        claims = Reservations(GpuDockerHook(host, timeout=ENGINE_TIMEOUT_S), grace_s).claims()
    except (HostUnreachable, DockerException, requests.exceptions.RequestException) as exc:
        return replace(node, unreachable=(
            f"Docker engine at {host.docker_url} did not answer ({type(exc).__name__}: {exc}); "
            f"start dockerd there or fix the host of connection {host.name!r}"
        ))
    return with_claims(node, claims)


def place_and_reserve(
    hosts: Sequence[HostConfig],
    request: PlacementRequest,
    policy_name: str,
    *,
    image: str,
    pull: str,
    identity: Mapping[str, str],
    attempts: int = DEFAULT_ATTEMPTS,
    agent_timeout: float = 2.0,
    grace_s: float = DEFAULT_GRACE_S,
    rng: random.Random | None = None,
) -> Reserved:
    """Place ``request`` on the pool and claim its GPUs there; raise :class:`NoFit` if none fits.

    The image is made present on the chosen host before claiming, because the claim
    container is created from it and a long pull must not hold GPUs.
    """
    policy = get_policy(policy_name)
    context = PlacementContext(rng=rng or random.Random())
    by_name = {h.name: h for h in hosts}
    milli = min(request.gpu_milli, 1000)
    lost: list[str] = []
    for _ in range(attempts):
        placement = place(request, pool_state(hosts, agent_timeout, grace_s), policy, context)
        host = by_name[placement.node]
        docker = GpuDockerHook(host)
        docker.ensure_image(image, pull)
        if not placement.gpu_indices:
            return Reserved(host, placement, None)
        try:
            reservation = Reservations(docker, grace_s).reserve(
                placement.gpu_indices, milli, new_owner(), image, identity
            )
        except ClaimTaken as exc:
            log.info("Lost the claim race, placing again: %s", exc)
            lost.append(str(exc))
            continue
        return Reserved(host, placement, reservation)
    placement = place(request, pool_state(hosts, agent_timeout, grace_s), policy, context)
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
