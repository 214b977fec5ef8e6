"""The one pool reader: every host's agent and engine, read concurrently, as one :class:`PoolView`.

First every node agent's ``/v1/node`` (capacity and load), then, concurrently, one list per
engine of the containers that carry a reservation owner (claims, holds, problem markers and the
running task containers that keep their claims alive), the engine's runtimes for hosts with GPUs
(an engine without the NVIDIA runtime offers no GPUs; asked once per engine and process, kept
``RUNTIMES_TTL_S``), and with an image to place, whether the engine has it. Each GPU's, CPU's and
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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from provider.errors import EngineError
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.limits import AGENT_TIMEOUT_S, ENGINE_TIMEOUT_S, MAX_CONCURRENT_HOSTS
from provider.labels import OWNER_LABEL
from provider.reservations.measured import measure
from provider.reservations.rules import (
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

RUNTIMES_TTL_S = 300.0
_runtimes: dict[str, tuple[float, tuple[str, ...]]] = {}
"""Runtimes per engine URL, kept for ``RUNTIMES_TTL_S`` in this process: they change only when
dockerd restarts with another configuration, and an engine's ``/info`` costs more than the
rest of a read. Only hosts with GPUs are asked."""


async def read_pool_view(
    hosts: Sequence[HostConfig],
    waiter: Waiter | None = None,
    *,
    tidy: bool = True,
    agent_timeout: float = AGENT_TIMEOUT_S,
    engine_timeout: float = ENGINE_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
    max_concurrency: int = MAX_CONCURRENT_HOSTS,
    clock: Callable[[], float] = time.time,
    image: str | None = None,
) -> PoolView:
    """Read every host; holds are applied as ``waiter`` sees them (None: a request that does not wait).

    With ``image``, each engine is also asked whether it has that image, and each node's
    ``pull_bytes`` says what a pull would cost there: 0 where the image is, its size (as the
    hosts that have it report it) elsewhere, unknown when no host has it.
    """
    measured = await measure(hosts, agent_timeout, max_concurrency)
    gate = asyncio.Semaphore(max_concurrency)

    async def one(host: HostConfig, node: NodeState) -> HostView:
        async with gate:
            return await _read_host(AsyncEngine(host, engine_timeout), node, tidy, grace_s, clock, image)

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
    engine: AsyncEngine, measured: NodeState, tidy: bool, grace_s: float, clock: Callable[[], float],
    image: str | None,
) -> HostView:
    if measured.unreachable is not None:
        return HostView(node=measured, measured=measured)
    host = engine.host
    try:
        entries, runtimes, found = await asyncio.gather(
            engine.containers([OWNER_LABEL]),
            _engine_runtimes(engine) if measured.gpus else _nothing(()),
            engine.image(image) if image else _nothing(None),
        )
    except EngineError as exc:
        problem = f"{exc}; its reservations are unknown"
        return HostView(node=replace(measured, unreachable=problem), measured=measured, engine_problem=problem)
    now = clock()
    claims = [c for c in map(parse_claim, entries) if c is not None]
    stale = stale_claims(claims, live_owners(entries), now, grace_s)
    holds = [h for h in (parse_hold(host.name, c) for c in entries) if h is not None]
    lapsed = [h for h in holds if h.expires < now]
    places = [p for p in (parse_place_in_line(host.name, c) for c in entries) if p is not None]
    left = [p for p in places if p.expires < now]
    problems = [p for p in map(parse_problem, entries) if p is not None]
    cured = [p for p in problems if p.expires < now]
    if tidy and (stale or lapsed or cured or left):
        for c in stale:
            log.warning("Reclaiming the stale reservation of %s on %s (owner %s, %.0f s old)",
                        c.task or "a task", host.name, c.owner, now - c.created)
        for h in lapsed:
            log.warning("Removing the lapsed hold of %s on %s", h.hold.task, host.name)
        for p in left:
            log.warning("Removing the lapsed place in line of %s on %s", p.waiting.task or p.waiting.owner, host.name)
        gone = [c.container_id for c in stale] + [h.container_id for h in lapsed] + [p.container_id for p in cured] \
            + [p.container_id for p in left]
        results = await asyncio.gather(*(engine.remove(i) for i in gone), return_exceptions=True)
        for failed in (r for r in results if isinstance(r, Exception)):
            log.warning("Could not tidy %s: %s", host.name, failed)
    counted = allocation(measured, [c for c in claims if c not in stale])
    node = counted.node
    current = [p for p in problems if p not in cured]
    if NVIDIA_RUNTIME not in runtimes and node.gpus:
        node = replace(node, gpu_unusable=(
            f"no NVIDIA runtime in its engine (runtimes: {', '.join(runtimes) or 'none'}): install the NVIDIA "
            "Container Toolkit there, run `nvidia-ctk runtime configure --runtime=docker` and restart dockerd"
        ))
    elif current and node.gpus:
        node = replace(node, gpu_suspended=f"GPU containers failed to start there lately: {current[0].reason}")
    return HostView(
        node=node,
        measured=measured,
        claims=counted.counted,
        stale=tuple(stale),
        holds=tuple(h for h in holds if h not in lapsed),
        line=tuple(p for p in places if p not in left),
        runtimes=runtimes,
        image_bytes=None if found is None else int(found.get("Size") or 0),
    )


async def _engine_runtimes(engine: AsyncEngine) -> tuple[str, ...]:
    url, now = engine.host.docker_url, time.monotonic()
    known = _runtimes.get(url)
    if known is None or now - known[0] > RUNTIMES_TTL_S:
        known = _runtimes[url] = (now, tuple(sorted((await engine.info()).get("Runtimes") or {})))
    return known[1]


async def _nothing(value: T) -> T:
    """An answer that needs no request, to gather with those that do."""
    return value
