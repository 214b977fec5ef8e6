"""The api-server app that sweeps orphaned task containers (``docs/deploy.md``, "Orphaned containers").

Airflow's api-server enters the lifespan of every FastAPI app a plugin mounts; this app's
lifespan runs :meth:`~provider.ui.orphan_sweeper.Sweeper.forever` as an asyncio task for as long
as the api-server runs, every ``[gpu_docker] orphan_sweep_interval`` seconds (0: never).

``GET /gpu-orphans/`` answers what the sweep did lately (the last sweep, the containers it
reaped), behind the same authentication as the cluster page's API (``docs/cluster_page.md``):
a bearer token or the UI's cookie, the "cluster activity" view, and reaped containers only of
DAGs the user may read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view
from fastapi import Depends, FastAPI, Response

from provider.ui.orphan_sweeper import Sweeper, sweep_interval

log = logging.getLogger(__name__)

ORPHANS_PREFIX = "/gpu-orphans"
"""Where the api-server mounts the app, below its base URL."""


def create_orphan_app() -> FastAPI:
    """The app served under :data:`ORPHANS_PREFIX`; it sweeps while the api-server runs."""
    sweeper = Sweeper()

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
