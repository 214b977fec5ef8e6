"""The api-server app that sweeps orphaned task containers (``docs/deploy.md``, "Orphaned containers").

Airflow's api-server enters the lifespan of every FastAPI app a plugin mounts; this app's
lifespan runs :meth:`~provider.reservations.sweeper.Sweeper.forever` as an asyncio task for as long
as the api-server runs, every ``[gpu_docker] orphan_sweep_interval`` seconds (0: never). The
api-server is in every Airflow 3 deployment, whatever the executor, and it has the metadata
database: the sweep reads the hosts the cluster page shows (:mod:`provider.ui.cluster_sources`)
and each task container's task instance from the database, here. Database and secrets look-ups
block, so the sweep calls them in worker threads, never on the api-server's event loop.

``GET /gpu-orphans/`` answers what the sweep did lately (the last sweep, the containers it
reaped), behind the same authentication as the cluster page's API (``docs/cluster_page.md``):
a bearer token or the UI's cookie, the "cluster activity" view, and reaped containers only of
DAGs the user may read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view
from airflow.configuration import conf
from airflow.exceptions import AirflowConfigException
from airflow.models.dag import DagModel
from airflow.models.taskinstance import TaskInstance
from airflow.observability.stats import Stats
from airflow.utils.session import create_session
from fastapi import Depends, FastAPI, Response
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from provider.clients.hosts import HostConfig
from provider.reservations.orphans import Known, Sweep
from provider.reservations.sweeper import DEFAULT_INTERVAL_S, Sweeper
from provider.stat_names import ORPHAN_SWEEPS, ORPHANS_REAPED, stat_tags
from provider.task_instance import TaskInstanceRef
from provider.ui.cluster_sources import PoolCache, pool_ids

log = logging.getLogger(__name__)

ORPHANS_PREFIX = "/gpu-orphans"
"""Where the api-server mounts the app, below its base URL."""
KEYS_PER_QUERY = 200
"""Task instances asked for in one query, well below every database's limit of bound values."""


def create_orphan_app() -> FastAPI:
    """The app served under :data:`ORPHANS_PREFIX`; it sweeps while the api-server runs."""
    pools = PoolCache()
    sweeper = Sweeper(lambda: hosts_to_sweep(pools), states_in_database, on_sweep=count_sweep)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper.interval_s = sweep_interval()
        if not sweeper.interval_s:
            log.info("Orphan sweep off: [gpu_docker] orphan_sweep_interval is 0")
            yield
            return
        log.info("Orphan sweep: every %g s, task containers whose task instance has ended are stopped",
                 sweeper.interval_s)
        task = asyncio.create_task(sweeper.forever(), name="gpu-docker-orphan-sweep")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(user: GetUserDep, session: SessionDep, response: Response) -> dict[str, Any]:
        readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
        response.headers["Cache-Control"] = "no-store"
        return sweeper.document(readable)

    app = FastAPI(title="GPU orphan sweep", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_api_route("/", status, methods=["GET"],
                      dependencies=[Depends(requires_access_view(AccessView.CLUSTER_ACTIVITY))])
    return app


def count_sweep(done: Sweep) -> None:
    """One sweep, and each container it stopped and removed, in Airflow's metrics (``docs/metrics.md``).

    Airflow core's ``Stats``: the api-server sets it up from ``[metrics]`` (Airflow 3.3 and later).
    A container the engine refused to remove is counted when a later sweep removes it.
    """
    Stats.incr(ORPHAN_SWEEPS)
    for reaped in done.reaped:
        if reaped.error is None:
            Stats.incr(ORPHANS_REAPED, tags=stat_tags(dag_id=reaped.task.dag_id, task_id=reaped.task.task_id,
                                                      host=reaped.host))


def sweep_interval() -> float:
    """``[gpu_docker] orphan_sweep_interval``: seconds between sweeps, 0 to sweep never."""
    seconds = conf.getfloat("gpu_docker", "orphan_sweep_interval", fallback=DEFAULT_INTERVAL_S)
    if seconds < 0:
        raise AirflowConfigException(
            f"[gpu_docker] orphan_sweep_interval is {seconds:g}: set it to the seconds between two sweeps "
            f"for orphaned task containers ({DEFAULT_INTERVAL_S:g} by default), or to 0 to turn the sweep off"
        )
    return seconds


def task_states(session: Session, keys: Sequence[TaskInstanceRef]) -> Known:
    """The state of each of ``keys`` that exists in the metadata database (None: no state yet),
    and which of their DAGs the database knows."""
    ti = TaskInstance
    found: dict[TaskInstanceRef, str | None] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = [(k.dag_id, k.task_id, k.run_id, k.map_index) for k in keys[start:start + KEYS_PER_QUERY]]
        rows = session.execute(
            select(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.state)
            .where(tuple_(ti.dag_id, ti.task_id, ti.run_id, ti.map_index).in_(chunk))
        )
        for r in rows:
            found[TaskInstanceRef(r.dag_id, r.task_id, r.run_id, r.map_index)] = None if r.state is None else str(r.state)
    dag_ids = sorted({k.dag_id for k in keys})
    dags: set[str] = set()
    for start in range(0, len(dag_ids), KEYS_PER_QUERY):
        chunk_ids = dag_ids[start:start + KEYS_PER_QUERY]
        dags.update(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(chunk_ids))))
    return Known(found, dags)


def states_in_database(keys: Sequence[TaskInstanceRef]) -> Known:
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
