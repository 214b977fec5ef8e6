"""What placement sees of a pool: the agents' measurements, the claims and the holds.

Each GPU's ``allocated_milli`` comes from the claims on its host, so a GPU reserved a second
ago counts as busy although its utilisation has not moved yet; each host a due waiter holds
is marked ``held`` for everyone behind it (:mod:`provider.scheduling.waiting`). A host whose
agent or engine does not answer stays in the list as unreachable, with the reason.

Reading also tidies: a stale claim (docs/reservations.md) or a lapsed hold is removed by
whoever reads the host next. The reader is a coroutine, so the operator and the sensor
(``asyncio.run``) and the trigger (``await``) share it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from provider.hooks import engine_async
from provider.hooks.agent_client import read_pool
from provider.hooks.claim_rules import (
    HOLD_LABEL,
    hold_labels,
    hold_name,
    OWNER_LABEL,
    HoldRecord,
    claims_and_live_owners,
    parse_claim,
    parse_hold,
    stale_claims,
    with_claims,
)
from provider.errors import EngineError
from provider.hooks.hosts import HostConfig
from provider.hooks.reservations import DEFAULT_GRACE_S
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.waiting import Waiter, apply_holds, hold_host, is_due

log = logging.getLogger(__name__)

ENGINE_TIMEOUT_S = 10.0
"""Seconds an engine may take to list its claims; engines answer slower than agents under load."""


@dataclass(frozen=True, slots=True)
class PoolView:
    """Nodes ready for :func:`provider.scheduling.place`, and the holds found on them."""

    nodes: list[NodeState]
    holds: list[HoldRecord]


async def read_pool_view(
    hosts: Sequence[HostConfig],
    waiter: Waiter | None = None,
    *,
    agent_timeout: float = 2.0,
    engine_timeout: float = ENGINE_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
) -> PoolView:
    """Read every host's agent and engine concurrently; holds are applied as seen by ``waiter``
    (None: a request that does not wait)."""
    nodes = await read_pool(hosts, agent_timeout)
    by_name = {h.name: h for h in hosts}
    read = await asyncio.gather(*(_engine_side(by_name[n.name], n, engine_timeout, grace_s) for n in nodes))
    holds = [h for _, found in read for h in found]
    return PoolView(apply_holds([n for n, _ in read], [h.hold for h in holds], waiter), holds)


async def engine_entries(host: HostConfig, timeout: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A host's containers that carry a reservation owner (claims and task containers) and its
    holds, listed concurrently: everything placement and the cluster page read of an engine."""
    owned, held = await asyncio.gather(
        engine_async.containers(host, [OWNER_LABEL], timeout),
        engine_async.containers(host, [f"{HOLD_LABEL}=true"], timeout),
    )
    return owned, held


async def _engine_side(
    host: HostConfig, node: NodeState, timeout: float, grace_s: float
) -> tuple[NodeState, list[HoldRecord]]:
    if node.unreachable is not None:
        return node, []
    try:
        owned, held = await engine_entries(host, timeout)
        now = time.time()
        entries, live = claims_and_live_owners(owned)
        claims = [c for c in map(parse_claim, entries) if c is not None]
        stale = stale_claims(claims, live, now, grace_s)
        holds = [h for h in (parse_hold(host.name, c) for c in held) if h is not None]
        lapsed = [h for h in holds if h.expires < now]
        for c in stale:
            log.warning("Reclaiming stale reservation of GPU %s on %s (owner %s, %.0f s old)",
                        c.gpu, host.name, c.owner, now - c.created)
        for h in lapsed:
            log.warning("Removing lapsed hold of %s on %s", h.hold.task, host.name)
        gone = [c.container_id for c in stale] + [h.container_id for h in lapsed]
        await asyncio.gather(*(engine_async.remove(host, container_id, timeout) for container_id in gone))
    except EngineError as exc:
        return replace(node, unreachable=str(exc)), []
    return with_claims(node, [c for c in claims if c not in stale]), [h for h in holds if h not in lapsed]


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
) -> str | None:
    """Put ``waiter``'s hold on a host once it is due; the host it holds, or None.

    A waiter keeps the first host it held (the hold is found again on the next read), so
    the host it drains does not change under it.
    """
    own = [h.hold.host for h in view.holds if h.hold.owner == waiter.owner]
    if own:
        return own[0]
    if not is_due(waiter, time.time(), hold_after_s):
        return None
    target = hold_host(request, view.nodes)
    if target is None:
        return None
    labels = hold_labels(waiter.owner, waiter.since, expires, identity)
    await engine_async.create_idle(hosts[target], hold_name(waiter.owner), image, labels)
    log.info("Waited since %s: holding host %s until this request fits there", waiter.since, target)
    return target


async def lift_holds(hosts: Iterable[HostConfig], owner: str) -> None:
    """Remove ``owner``'s hold (it has its GPUs, or stopped waiting) from each of ``hosts``.

    A hold is named after its owner (:func:`hold_name`), so it is removed by name without
    reading anything first; a host without it answers 404, which is fine. A host that does not
    answer keeps the hold until it lapses.
    """
    targets = list(hosts)
    results = await asyncio.gather(
        *(engine_async.remove(h, hold_name(owner)) for h in targets), return_exceptions=True
    )
    for host, result in zip(targets, results):
        if isinstance(result, Exception):
            log.warning("Could not lift the hold on %s (%s); it lapses by itself", host.name, result)
