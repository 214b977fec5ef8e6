"""The plugin's declarations: the navigation entry, an app built only when first used, and the
apps list built only where Airflow mounts it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provider.ui.plugin import LazyAsgiApp, nav_view
from tools.local_airflow import REPO, venv_env


@pytest.mark.parametrize(
    ("base_url", "href"),
    [
        pytest.param("http://airflow.example.com:8080", "/gpu-cluster/", id="at-the-root"),
        pytest.param("https://example.com/airflow/", "/airflow/gpu-cluster/", id="below-a-path"),
    ],
)
def test_nav_entry_points_below_the_base_url(monkeypatch: pytest.MonkeyPatch, base_url: str, href: str) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", base_url)
    view = nav_view()
    assert (view["href"], view["url_route"], view["destination"]) == (href, "gpu-cluster", "nav")
    assert view["icon"] == f"{href}static/gpu.svg"


def test_lazy_app_is_built_once_on_the_first_request() -> None:
    built: list[int] = []
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])

    def factory() -> Any:
        built.append(1)
        return app

    lazy = LazyAsgiApp(factory)
    assert built == []
    for path in ("/", "/api/cluster"):
        asyncio.run(lazy({"type": "http", "path": path}, None, None))
    assert built == [1] and calls == ["/", "/api/cluster"]


LOAD_PLUGINS = """
import sys
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
assert "gpu_cluster" in [p.name for p in plugins], errors
plugins_manager.integrate_macros_plugins()
print("fastapi after loading:", "fastapi" in sys.modules)
apps, _ = plugins_manager.get_fastapi_plugins()
from fastapi import FastAPI
ours = [a for a in apps if a["url_prefix"].startswith("/gpu-")]
print("mounted:", [(a["url_prefix"], isinstance(a["app"], FastAPI)) for a in ours])
[plugin] = [p for p in plugins if p.name == "gpu_cluster"]
print("same list:", plugin.fastapi_apps is type(plugin).fastapi_apps)
"""


def test_loading_the_plugin_imports_no_fastapi_and_the_api_server_gets_both_apps(tmp_path: Path) -> None:
    """A task process loads plugins too and must not pay for FastAPI; the api-server mounts the
    page and the orphan sweep, the sweep as a FastAPI app so that its lifespan is entered."""
    out = subprocess.run([sys.executable, "-c", LOAD_PLUGINS], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AIRFLOW_HOME": str(tmp_path), **venv_env()}, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "fastapi after loading: False" in out.stdout
    assert "mounted: [('/gpu-cluster', False), ('/gpu-orphans', True)]" in out.stdout
    assert "same list: True" in out.stdout
