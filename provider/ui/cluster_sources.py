"""What the GPU cluster page reads: pool connections, hosts, claims, waiting task instances.

This runs inside Airflow's api-server, in a worker thread of its request pool (the endpoint
is synchronous). Agents and engines are read by the one pool reader placement uses
(:func:`provider.reservations.pool.read_pool_view`), concurrently with per-host timeouts, but
in its look-only mode: the page removes no stale claim.

Which pools are shown (the rule the page documents):

1. every ``gpu_docker_pool`` connection in the metadata database;
2. every ``gpu_docker_pool`` connection in the api-server's ``AIRFLOW_CONN_*`` variables;
3. the ids listed in ``[gpu_docker] cluster_pools`` (comma-separated), for pools kept in a
   secrets backend, which cannot be listed;
4. when none of these names a pool: the default host ``gpu_docker_default`` alone (the
   local engine when that connection is not defined either), as the operator's default.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timezone

from airflow.configuration import conf
from airflow.models.connection import Connection
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import select
from sqlalchemy.orm import Session

from provider.errors import HostConfigError
from provider.clients.engine_sync import run_sync
from provider.clients.hosts import DEFAULT_HOST_CONN_ID, POOL_CONN_TYPE, HostConfig, pool_extra, resolve_pool
from provider.limits import AGENT_TIMEOUT_S, BACKGROUND_ENGINE_TIMEOUT_S
from provider.reservations.pool import read_pool_view
from provider.task_instance import TaskInstanceRef
from provider.reservations.view import HostView
from provider.scheduling.queues import QueueSetup, queues_from_extra
from provider.ui.cluster_view import (
    WAITING_OPERATORS,
    WAITING_STATES,
    WaitingTask,
    merged_pool_ids,
    pool_ids_in_environment,
)

MAX_WAITING = 500
"""Rows of the waiting-tasks table; more would not be read by anyone."""

POOLS_TTL_S = 30.0
"""Seconds a resolved pool (its hosts' connections) is reused; see :class:`PoolCache`."""

DEFAULT_REFRESH_S = 5.0
"""``[gpu_docker] cluster_refresh_s``: how often the page refreshes, and how long one read of
the hosts serves every viewer (:class:`SharedReading`)."""

MIN_REFRESH_S = 1.0
"""The shortest refresh period a deployment may set: below it the hosts are read too often."""


@dataclass(frozen=True, slots=True)
class PoolSet:
    """The pools to show, their hosts (each host once), and why a pool could not be read."""

    pools: dict[str, list[str]] = field(default_factory=dict)
    hosts: list[HostConfig] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    queues: dict[str, QueueSetup] = field(default_factory=dict)
    """The queues of each pool that declares them (docs/queues.md)."""


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
            declared = queues_from_extra(pool_extra(pool_id, Connection.get_connection_from_secrets), name)
            if declared is not None:
                found.queues[name] = declared[0]
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


def refresh_s() -> float:
    """``[gpu_docker] cluster_refresh_s`` (seconds, at least :data:`MIN_REFRESH_S`); a bad value
    stops the page's app from being built, with the fix, rather than hammering the hosts."""
    raw = conf.get("gpu_docker", "cluster_refresh_s", fallback="") or str(DEFAULT_REFRESH_S)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= MIN_REFRESH_S or value == float("inf"):
        raise HostConfigError(
            f"[gpu_docker] cluster_refresh_s must be a number of seconds >= {MIN_REFRESH_S:g} (how often the GPU "
            f"cluster page reads the hosts), got {raw!r}. Set it to e.g. {DEFAULT_REFRESH_S:g}, or remove it."
        )
    return value


@dataclass(frozen=True, slots=True)
class Reading:
    """One read of a set of hosts, and when it was taken (wall clock, shown on the page)."""

    hosts: list[HostView]
    at: datetime


class SharedReading:
    """At most one read of the hosts per ``period_s``, shared by every caller (single flight).

    Every open page asks every few seconds, and each ask would read every agent and engine of
    the pool: a crowd of viewers (or one script) would multiply the load on the hosts. Here a
    reading younger than ``period_s`` is served as it is; when it is older, the first caller
    reads and the callers that arrive meanwhile wait for that read instead of starting their
    own. A read that raises is not kept: the next caller tries again.
    """

    def __init__(self, period_s: float, read: Callable[[Sequence[HostConfig]], list[HostView]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.read = read
        self.clock = clock
        self._cond = threading.Condition()
        self._reading = False
        self._entry: tuple[float, tuple[tuple[str, str, str | None], ...], Reading] | None = None

    def get(self, hosts: Sequence[HostConfig]) -> Reading:
        key = tuple((h.name, h.docker_url, h.agent_url) for h in hosts)
        with self._cond:
            while True:
                entry = self._entry
                if entry is not None and entry[1] == key and self.clock() - entry[0] < self.period_s:
                    return entry[2]
                if not self._reading:
                    self._reading = True
                    break
                self._cond.wait()
        started, found = self.clock(), None
        try:
            found = Reading(self.read(hosts), datetime.now(timezone.utc))
            return found
        finally:
            with self._cond:
                self._reading = False
                if found is not None:
                    self._entry = (started, key, found)
                self._cond.notify_all()


def read_hosts(hosts: Sequence[HostConfig]) -> list[HostView]:
    """Every host's metrics, claims and holds, read as placement reads them; nothing is removed."""
    if not hosts:
        return []
    view = run_sync(read_pool_view(hosts, tidy=False, agent_timeout=AGENT_TIMEOUT_S, engine_timeout=BACKGROUND_ENGINE_TIMEOUT_S))
    return list(view.hosts)


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
            task=TaskInstanceRef(r.dag_id, r.task_id, r.run_id, r.map_index, r.try_number),
            state=str(r.state),
            operator=str(r.operator),
            since=r.start_date or r.updated_at,
        )
        for r in rows
    ]
