"""What the GPU cluster page reads: pool connections, hosts, claims, waiting task instances.

This runs inside Airflow's api-server, in a worker thread of its request pool (the endpoint
is synchronous). Agents and engines are read as placement reads them
(:mod:`provider.hooks.agent_client`, :mod:`provider.hooks.engine_async`), concurrently with
per-host timeouts, but the page only looks: it removes no stale claim.

Which pools are shown (the rule the page documents):

1. every ``gpu_docker_pool`` connection in the metadata database;
2. every ``gpu_docker_pool`` connection in the api-server's ``AIRFLOW_CONN_*`` variables;
3. the ids listed in ``[gpu_docker] cluster_pools`` (comma-separated), for pools kept in a
   secrets backend, which cannot be listed;
4. when none of these names a pool: the default host ``gpu_docker_default`` alone (the
   local engine when that connection is not defined either), as the operator's default.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from airflow.configuration import conf
from airflow.models.connection import Connection
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import select
from sqlalchemy.orm import Session

from provider.hooks.agent_client import read_pool
from provider.hooks.claim_rules import claims_and_live_owners
from provider.errors import EngineError, HostConfigError
from provider.hooks.hosts import DEFAULT_HOST_CONN_ID, POOL_CONN_TYPE, HostConfig, resolve_pool
from provider.hooks.pool_state import engine_entries
from provider.hooks.reservations import DEFAULT_GRACE_S
from provider.scheduling.model import NodeState
from provider.ui.cluster_view import (
    WAITING_OPERATORS,
    WAITING_STATES,
    HostReading,
    TaskRef,
    WaitingTask,
    held_claims,
    host_holds,
    merged_pool_ids,
    pool_ids_in_environment,
)

AGENT_TIMEOUT_S = 2.0
"""Seconds each node agent may take; the page refreshes every few seconds."""

ENGINE_TIMEOUT_S = 3.0
"""Seconds each Docker engine may take to list its claims."""

MAX_WAITING = 500
"""Rows of the waiting-tasks table; more would not be read by anyone."""

POOLS_TTL_S = 30.0
"""Seconds a resolved pool (its hosts' connections) is reused; see :class:`PoolCache`."""


@dataclass(frozen=True, slots=True)
class PoolSet:
    """The pools to show, their hosts (each host once), and why a pool could not be read."""

    pools: dict[str, list[str]] = field(default_factory=dict)
    hosts: list[HostConfig] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def configured_pool_ids() -> list[str]:
    """``[gpu_docker] cluster_pools``: pool ids the page shows although it cannot list them."""
    raw = conf.get("gpu_docker", "cluster_pools", fallback="") or ""
    return [p.strip() for p in raw.split(",") if p.strip()]


def pool_ids(session: Session, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The pools to show, by the rule in this module's docstring (empty: show the default)."""
    in_db = session.scalars(
        select(Connection.conn_id).where(Connection.conn_type == POOL_CONN_TYPE).order_by(Connection.conn_id)
    )
    return merged_pool_ids(in_db, pool_ids_in_environment(environ), configured_pool_ids())


def resolve_pools(ids: Sequence[str]) -> PoolSet:
    """Each pool's hosts from its connections; a broken pool is reported, not fatal."""
    found = PoolSet()
    seen: set[str] = set()
    wanted: list[str | None] = list(ids) or [None]
    for pool_id in wanted:
        name = pool_id or DEFAULT_HOST_CONN_ID
        try:
            hosts = resolve_pool(pool_id, Connection.get_connection_from_secrets)
        except HostConfigError as exc:
            found.pools[name] = []
            found.problems.append(f"{name}: {exc}")
            continue
        found.pools[name] = [h.name for h in hosts]
        for host in hosts:
            if host.name not in seen:
                seen.add(host.name)
                found.hosts.append(host)
    return found


class PoolCache:
    """Resolved pools, kept for ``ttl_s``: connections change rarely, pages refresh often.

    Each look-up of a connection from the secrets backends costs a round trip (and Airflow
    logs a warning for every connection type with ``_``), so a page refreshed every few seconds
    by several people would repeat them all the time. A changed connection shows within
    ``ttl_s``.
    """

    def __init__(self, ttl_s: float = POOLS_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._entry: tuple[float, tuple[str, ...], PoolSet] | None = None

    def get(self, ids: Sequence[str], resolve: Callable[[Sequence[str]], PoolSet] | None = None) -> PoolSet:
        key = tuple(ids)
        with self._lock:
            entry = self._entry
            if entry is not None and entry[1] == key and self.clock() - entry[0] < self.ttl_s:
                return entry[2]
        found = (resolve or resolve_pools)(key)
        with self._lock:
            self._entry = (self.clock(), key, found)
        return found


def read_hosts(hosts: Sequence[HostConfig], grace_s: float = DEFAULT_GRACE_S) -> list[HostReading]:
    """Every host's metrics and claims, read as placement reads them; nothing is removed."""
    if not hosts:
        return []
    return asyncio.run(_read_hosts(hosts, grace_s))


async def _read_hosts(hosts: Sequence[HostConfig], grace_s: float) -> list[HostReading]:
    nodes = await read_pool(hosts, AGENT_TIMEOUT_S)
    by_name = {h.name: h for h in hosts}
    now = time.time()
    return list(await asyncio.gather(*(_with_claims(by_name[n.name], n, now, grace_s) for n in nodes)))


async def _with_claims(host: HostConfig, node: NodeState, now: float, grace_s: float) -> HostReading:
    if node.unreachable is not None:
        return HostReading(node=node)
    try:
        owned, held = await engine_entries(host, ENGINE_TIMEOUT_S)
    except EngineError as exc:
        return HostReading(node=node, engine_problem=f"{exc}; its GPU reservations are unknown")
    summaries, owners = claims_and_live_owners(owned)
    return HostReading(node=node, claims=held_claims(summaries, owners, now, grace_s), holds=host_holds(held))


def waiting_tasks(session: Session, readable_dags: Set[str]) -> list[WaitingTask]:
    """GPU tasks that wait for resources now, oldest first, in DAGs the user may read."""
    if not readable_dags:
        return []
    ti = TaskInstance
    rows = session.execute(
        select(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number, ti.state, ti.operator,
               ti.start_date, ti.updated_at)
        .where(ti.state.in_(WAITING_STATES), ti.operator.in_(WAITING_OPERATORS), ti.dag_id.in_(readable_dags))
        .order_by(ti.start_date, ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        .limit(MAX_WAITING)
    )
    return [
        WaitingTask(
            task=TaskRef(r.dag_id, r.task_id, r.run_id, r.map_index, r.try_number),
            state=str(r.state),
            operator=str(r.operator),
            since=r.start_date or r.updated_at,
        )
        for r in rows
    ]
