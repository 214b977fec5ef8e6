"""The orphan sweep as Airflow's api-server runs it: which hosts, which task-instance states.

The api-server is in every Airflow 3 deployment, whatever the executor, and it has the metadata
database, so the sweep of :mod:`provider.reservations.orphans` runs there, in an asyncio task of
:mod:`provider.ui.orphan_app`, every ``[gpu_docker] orphan_sweep_interval`` seconds. It reads
the hosts the cluster page shows (:mod:`provider.ui.cluster_sources`), and each task
container's task instance from the database. Database and secrets look-ups block, so they run
in worker threads, never on the api-server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence, Set
from datetime import datetime, timezone
from typing import Any

from airflow.configuration import conf
from airflow.exceptions import AirflowConfigException
from airflow.models.dag import DagModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from provider.clients.hosts import HostConfig
from provider.reservations.orphans import Known, Reaped, Sweep, TaskKey, sweep
from provider.ui.cluster_sources import PoolCache, pool_ids

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
"""With a sweep every 30 s, an orphan is gone well within 2 minutes of its task instance ending."""
KEPT_ACTIONS = 200
"""Reaped containers remembered for ``GET /gpu-orphans/``; the api-server's log keeps them all."""
KEYS_PER_QUERY = 200
"""Task instances asked for in one query, well below every database's limit of bound values."""


def sweep_interval() -> float:
    """``[gpu_docker] orphan_sweep_interval``: seconds between sweeps, 0 to sweep never."""
    seconds = conf.getfloat("gpu_docker", "orphan_sweep_interval", fallback=DEFAULT_INTERVAL_S)
    if seconds < 0:
        raise AirflowConfigException(
            f"[gpu_docker] orphan_sweep_interval is {seconds:g}: set it to the seconds between two sweeps "
            f"for orphaned task containers ({DEFAULT_INTERVAL_S:g} by default), or to 0 to turn the sweep off"
        )
    return seconds


def task_states(session: Session, keys: Sequence[TaskKey]) -> Known:
    """The state of each of ``keys`` that exists in the metadata database (None: no state yet),
    and which of their DAGs the database knows."""
    ti = TaskInstance
    found: dict[TaskKey, str | None] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = [(k.dag_id, k.task_id, k.run_id, k.map_index) for k in keys[start:start + KEYS_PER_QUERY]]
        rows = session.execute(
            select(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.state)
            .where(tuple_(ti.dag_id, ti.task_id, ti.run_id, ti.map_index).in_(chunk))
        )
        for r in rows:
            found[TaskKey(r.dag_id, r.task_id, r.run_id, r.map_index)] = None if r.state is None else str(r.state)
    dag_ids = sorted({k.dag_id for k in keys})
    dags: set[str] = set()
    for start in range(0, len(dag_ids), KEYS_PER_QUERY):
        chunk_ids = dag_ids[start:start + KEYS_PER_QUERY]
        dags.update(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(chunk_ids))))
    return Known(found, dags)


def states_in_database(keys: Sequence[TaskKey]) -> Known:
    """:func:`task_states` in a session of its own: the sweep's look-up, called in a worker thread."""
    with create_session() as session:
        return task_states(session, keys)


def hosts_to_sweep(pools: PoolCache) -> list[HostConfig]:
    """The hosts the cluster page shows; a pool whose connections are broken is logged and left out."""
    with create_session() as session:
        ids = pool_ids(session)
    found = pools.get(ids)
    for problem in found.problems:
        log.warning("Orphan sweep: pool left out: %s", problem)
    return found.hosts


class Sweeper:
    """Sweeps every ``interval_s`` until cancelled and remembers what it did, for the app's ``GET``."""

    def __init__(self) -> None:
        self.interval_s = DEFAULT_INTERVAL_S  # the app's lifespan sets the configured one
        self.pools = PoolCache()
        self.last: Sweep | None = None
        self.reaped: deque[Reaped] = deque(maxlen=KEPT_ACTIONS)

    async def once(self) -> Sweep:
        result = await sweep(await asyncio.to_thread(hosts_to_sweep, self.pools), states_in_database)
        self.last = result
        self.reaped.extend(result.reaped)
        return result

    async def forever(self) -> None:
        """Sweep now and every ``interval_s``; a failed sweep is logged and the next one comes."""
        while True:
            try:
                await self.once()
            except Exception:
                log.exception("Orphan sweep failed; orphaned containers stay until a sweep succeeds, the next "
                              "in %g s. The cause:", self.interval_s)
            await asyncio.sleep(self.interval_s)

    def document(self, readable_dags: Set[str]) -> dict[str, Any]:
        """The last sweep and the containers reaped lately, newest first, of DAGs the user may read."""
        last = self.last
        return {
            "interval_s": self.interval_s,
            "last_sweep": None if last is None else {
                "at": _iso(last.at), "hosts": list(last.hosts), "task_containers": last.task_containers,
                "skipped": list(last.skipped),
            },
            "reaped": [{**r.as_dict(), "at": _iso(r.at)} for r in reversed(self.reaped)
                       if r.task.dag_id in readable_dags],
        }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
