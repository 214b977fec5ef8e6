"""The GPU cluster page and its JSON API, as a FastAPI app the api-server mounts.

* ``GET /gpu-cluster/`` is the page: static HTML and a script, no data, so it needs no login.
* ``GET /gpu-cluster/api/cluster`` is the document the page renders. It authenticates exactly
  like Airflow's own REST API, with Airflow's dependency: a bearer JWT from
  ``POST /auth/token``, or the ``_token`` cookie the Airflow UI signs in with (which the page's
  requests carry because they are same-origin). Without either the answer is 401, with an
  invalid token 403. The user must also be allowed the "cluster activity" view, and sees which
  task holds a GPU only for DAGs they may read.

The endpoint is a plain ``def``: FastAPI runs it in a worker thread, so reading agents and
engines (bounded by their timeouts) never blocks the api-server's event loop. The hosts are read
at most once per refresh period (``[gpu_docker] cluster_refresh_s``), whoever asks and however
many ask at once (:class:`~provider.ui.cluster_sources.SharedReading`): a crowd of viewers costs
the hosts what one viewer costs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view
from fastapi import Depends, FastAPI, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session

from provider.ui.cluster_sources import PoolCache, SharedReading, pool_ids, read_hosts, refresh_s, waiting_tasks
from provider.ui.cluster_view import cluster_document
from provider.ui.routes import APP_PREFIX, TITLE, base_path

STATIC = Path(__file__).with_name("static")

PAGE_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'"
"""The page loads only its own script and style, and only the Airflow UI may frame it."""


def create_app() -> FastAPI:
    """The app served under :data:`~provider.ui.routes.APP_PREFIX`."""
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)
    period = refresh_s()
    pools = PoolCache()
    readings = SharedReading(period, read_hosts)

    def cluster(user: GetUserDep, session: SessionDep, response: Response) -> dict[str, Any]:
        return cluster_view(user, session, response, pools, readings)

    def page() -> HTMLResponse:
        return page_html(period)

    app.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route(
        "/api/cluster",
        cluster,
        methods=["GET"],
        dependencies=[Depends(requires_access_view(AccessView.CLUSTER_ACTIVITY))],
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def page_html(refresh_seconds: float) -> HTMLResponse:
    """The page, told where the API and the Airflow UI are (the base URL may have a path) and how
    often to refresh: the period one reading of the hosts is shared for."""
    base = base_path()
    settings = {"api": f"{base}{APP_PREFIX}/api/cluster", "base": base, "refreshSeconds": refresh_seconds}
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    html = html.replace("{{STATIC}}", f"{base}{APP_PREFIX}/static").replace(
        "{{SETTINGS}}", json.dumps(settings).replace("&", "&amp;").replace('"', "&quot;")
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})


def cluster_view(user: BaseUser, session: Session, response: Response, pool_cache: PoolCache,
                 readings: SharedReading) -> dict[str, Any]:
    """The page's document: pools, hosts with GPUs and holders, waiting tasks.

    The metadata database is read first and its connection handed back before the hosts are
    read, so a slow agent never holds a database connection.
    """
    readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
    ids = pool_ids(session)
    waiting = waiting_tasks(session, readable)
    session.close()
    pools = pool_cache.get(ids)
    reading = readings.get(pools.hosts)
    response.headers["Cache-Control"] = "no-store"
    return cluster_document(
        pools=pools.pools,
        readings=reading.hosts,
        waiting=waiting,
        problems=pools.problems,
        queues=pools.queues,
        readable=readable.__contains__,
        base_path=base_path(),
        generated_at=reading.at,
    )
