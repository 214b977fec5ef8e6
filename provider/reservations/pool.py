"""The one pool reader: every host's agent and engine, read concurrently, as one :class:`PoolView`.

First every node agent's ``/v1/node`` (capacity and load), then, concurrently, one list per
engine of the containers that carry a reservation owner (claims, holds, problem markers and the
running task containers that keep their claims alive), the engine's runtimes and clock
(:mod:`provider.reservations.engine_clock`: an engine without the NVIDIA runtime offers no GPUs,
and every age is measured on the engine's clock), and with an image to place, whether the
engine has it. Each GPU's, CPU's and
memory's reservation is the fold of the host's claims through the accounting
(:mod:`provider.reservations.rules`), so a GPU reserved a second ago counts as busy although
its utilisation has not moved yet. A host whose agent or engine does not answer stays in the
view as unreachable, with the reason; a host without an agent is *unmeasured* (usable for
CPU-only work, said so in the placement record).

Two modes. ``tidy=True`` (placement, the sensor, the waiting trigger): stale claims (their task
runs nowhere), lapsed holds and expired problem markers are removed by whoever reads the host
next. ``tidy=False`` (the cluster page, ``NodeMetricsHook``): look only, report stale claims,
remove nothing. Either way, lapsed holds hold nothing, and lapsed places in line (the waiting
tasks of pools with queues, docs/queues.md) are not in the line.

Deployments (:mod:`provider.reservations.deployment`): every claim on a host takes its capacity,
whichever deployment made it, but a read judges stale, and removes, only its own deployment's
claims, holds, places and markers, and its line holds only its own deployment's places.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from provider.errors import EngineError
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.limits import AGENT_TIMEOUT_S, ENGINE_TIMEOUT_S, MAX_CONCURRENT_HOSTS
from provider.labels import OWNER_LABEL
from provider.reservations.deployment import current_deployment
from provider.reservations.engine_clock import EngineInfo, engine_info
from provider.reservations.measured import measure
from provider.reservations.rules import (
    Claim,
    GpuProblem,
    HoldRecord,
    PlaceInLine,
    allocation,
    live_owners,
    parse_claim,
    parse_hold,
    parse_place_in_line,
    parse_problem,
    stale_claims,
)
from provider.reservations.store import DEFAULT_GRACE_S
from provider.reservations.view import HostView, PoolView
from provider.scheduling.model import NodeState
from provider.scheduling.waiting import Waiter, apply_holds

log = logging.getLogger(__name__)

NVIDIA_RUNTIME = "nvidia"
T = TypeVar("T")


async def read_pool_view(
    hosts: Sequence[HostConfig],
    waiter: Waiter | None = None,
    *,
    tidy: bool = True,
    agent_timeout: float = AGENT_TIMEOUT_S,
    engine_timeout: float = ENGINE_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
    max_concurrency: int = MAX_CONCURRENT_HOSTS,
    image: str | None = None,
    deployment: str | None = None,
) -> PoolView:
    """Read every host; holds are applied as ``waiter`` sees them (None: a request that does not wait),
    as ``deployment`` (None: this process's) reads them.

    With ``image``, each engine is also asked whether it has that image, and each node's
    ``pull_bytes`` says what a pull would cost there: 0 where the image is, its size (as the
    hosts that have it report it) elsewhere, unknown when no host has it.
    """
    mine = deployment or current_deployment()
    measured = await measure(hosts, agent_timeout, max_concurrency)
    gate = asyncio.Semaphore(max_concurrency)

    async def one(host: HostConfig, node: NodeState) -> HostView:
        async with gate:
            return await _read_host(AsyncEngine(host, engine_timeout), node, tidy, grace_s, mine, image)

    views = await asyncio.gather(*(one(h, n) for h, n in zip(hosts, measured)))
    nodes = apply_holds([v.node for v in views], [r.hold for v in views for r in v.holds], waiter)
    if image is not None:
        nodes = _with_pull_bytes(nodes, views)
    return PoolView(tuple(replace(v, node=n) for v, n in zip(views, nodes)))


def _with_pull_bytes(nodes: Sequence[NodeState], views: Sequence[HostView]) -> list[NodeState]:
    """Each reachable node's pull cost: 0 with the image, the image's size without it."""
    sizes = [v.image_bytes for v in views if v.image_bytes is not None]
    size = max(sizes) if sizes else None
    return [
        n if n.unreachable is not None else replace(n, pull_bytes=0 if v.image_bytes is not None else size)
        for n, v in zip(nodes, views)
    ]


async def _read_host(
    engine: AsyncEngine, measured: NodeState, tidy: bool, grace_s: float, mine: str, image: str | None,
) -> HostView:
    if measured.unreachable is not None:
        return HostView(node=measured, measured=measured, deployment=mine)
    host = engine.host
    try:
        entries, info, found = await asyncio.gather(
            engine.containers([OWNER_LABEL]),
            engine_info(engine),
            engine.image(image) if image else _nothing(None),
        )
    except EngineError as exc:
        problem = f"{exc}; its reservations are unknown"
        return HostView(node=replace(measured, unreachable=problem), measured=measured, engine_problem=problem,
                        deployment=mine)
    now = info.now()
    claims = [c for c in map(parse_claim, entries) if c is not None]
    stale = stale_claims([c for c in claims if c.deployment == mine], live_owners(entries), now, grace_s)
    holds = [h for h in (parse_hold(host.name, c) for c in entries) if h is not None]
    lapsed = [h for h in holds if now is not None and h.expires < now]
    places = [p for p in (parse_place_in_line(host.name, c) for c in entries) if p is not None]
    left = [p for p in places if now is not None and p.expires < now]
    problems = [p for p in map(parse_problem, entries) if p is not None]
    cured = [p for p in problems if now is not None and p.expires < now]
    if tidy:
        await _tidy(engine, stale, [h for h in lapsed if h.deployment == mine], [p for p in left if p.deployment == mine],
                    [p.container_id for p in cured if p.deployment == mine], now)
    for claim in claims:
        if claim.malformed is not None:
            log.warning("A claim on %s could not be read (%s): it takes the whole host until its owner %s is gone "
                        "for %g s", host.name, claim.malformed, claim.owner or "(none)", grace_s)
    counted = allocation(measured, [c for c in claims if c not in stale])
    return HostView(
        node=_usable(counted.node, info, [p for p in problems if p not in cured]),
        measured=measured,
        claims=counted.counted,
        stale=tuple(stale),
        holds=tuple(h for h in holds if h not in lapsed),
        line=tuple(p for p in places if p not in left and p.deployment == mine),
        runtimes=info.runtimes,
        image_bytes=None if found is None else int(found.get("Size") or 0),
        deployment=mine,
        engine_now=now,
    )


async def _tidy(engine: AsyncEngine, stale: Sequence[Claim], lapsed: Sequence[HoldRecord],
                left: Sequence[PlaceInLine], cured: Sequence[str], now: float | None) -> None:
    """Remove this deployment's stale claims, lapsed holds and places, and expired markers."""
    host = engine.host
    for c in stale:
        log.warning("Reclaiming the stale reservation of %s on %s (owner %s, %.0f s old by its engine's clock)",
                    c.task or "a task", host.name, c.owner, (now or 0.0) - (c.created or 0.0))
    for h in lapsed:
        log.warning("Removing the lapsed hold of %s on %s", h.hold.task, host.name)
    for p in left:
        log.warning("Removing the lapsed place in line of %s on %s", p.waiting.task or p.waiting.owner, host.name)
    gone = [c.container_id for c in stale] + [h.container_id for h in lapsed] + list(cured) \
        + [p.container_id for p in left]
    results = await asyncio.gather(*(engine.remove(i) for i in gone), return_exceptions=True)
    for failed in (r for r in results if isinstance(r, Exception)):
        log.warning("Could not tidy %s: %s", host.name, failed)


def _usable(node: NodeState, info: EngineInfo, problems: Sequence[GpuProblem]) -> NodeState:
    """``node`` with its GPUs marked unusable (no NVIDIA runtime) or suspended (a recent problem)."""
    if NVIDIA_RUNTIME not in info.runtimes and node.gpus:
        return replace(node, gpu_unusable=(
            f"no NVIDIA runtime in its engine (runtimes: {', '.join(info.runtimes) or 'none'}): install the NVIDIA "
            "Container Toolkit there, run `nvidia-ctk runtime configure --runtime=docker` and restart dockerd"
        ))
    if problems and node.gpus:
        return replace(node, gpu_suspended=f"GPU containers failed to start there lately: {problems[0].reason}")
    return node


async def _nothing(value: T) -> T:
    """An answer that needs no request, to gather with those that do."""
    return value
