"""What the ``gpu_cluster`` Airflow plugin declares, at the cost of a few imports.

Every Airflow process imports the plugins folder, task processes included, but only the
api-server serves the page and sweeps orphaned containers. So the page's FastAPI app (and with
it the api-server's authentication machinery, about a second of imports) is built on the first
request that reaches it, by :class:`LazyAsgiApp`, never when a task starts; and the list of apps
(the orphan sweep's is a FastAPI app from the start, whose lifespan the api-server must see)
is built only when Airflow reads ``fastapi_apps``, by :class:`FastApiApps`: only the
api-server and ``airflow plugins`` do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from provider.ui.routes import APP_PREFIX, TITLE, URL_ROUTE, base_path

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

def nav_view() -> dict[str, Any]:
    """The navigation entry: a top-level item whose page the UI shows in a frame."""
    page = f"{base_path()}{APP_PREFIX}"
    return {
        "name": TITLE,
        "href": f"{page}/",
        "destination": "nav",
        "url_route": URL_ROUTE,
        "nav_top_level": True,
        "icon": f"{page}/static/gpu.svg",
    }


class LazyAsgiApp:
    """An ASGI app that builds the real one from ``factory`` when the first request comes."""

    def __init__(self, factory: Callable[[], ASGIApp]) -> None:
        self._factory = factory
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


def _build() -> ASGIApp:
    from provider.ui.app import create_app

    return create_app()


def fastapi_app() -> dict[str, Any]:
    """The page's ``fastapi_apps`` entry."""
    return {"app": LazyAsgiApp(_build), "url_prefix": APP_PREFIX, "name": TITLE}


class FastApiApps:
    """The plugin's ``fastapi_apps``, built on the first read and the same list after.

    Building the orphan sweep's app imports FastAPI and the api-server's authentication
    machinery, which a task process that loads plugins must not pay for; Airflow reads this
    attribute only where it mounts or lists the apps.
    """

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        if self._apps is None:
            from provider.ui.orphan_app import ORPHANS_PREFIX, create_orphan_app

            self._apps = [fastapi_app(),
                          {"app": create_orphan_app(), "url_prefix": ORPHANS_PREFIX, "name": "GPU orphan sweep"}]
        return self._apps


class GpuClusterPlugin(AirflowPlugin):
    """Serves the page from the api-server and puts it in the UI's navigation, and sweeps the
    GPU hosts for orphaned task containers (``docs/deploy.md``). Installed with the distribution
    (entry point ``airflow.plugins``), so no file goes into a plugins folder."""

    name = "gpu_cluster"
    fastapi_apps = FastApiApps()
    external_views = [nav_view()]
