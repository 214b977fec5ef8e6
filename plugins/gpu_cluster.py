"""Airflow UI plugin: the "GPU cluster" page (hosts, GPUs, which task holds each, who waits).

The page and its JSON API (``/gpu-cluster/api/cluster``, Airflow login required) live in
:mod:`provider.ui`; this file only registers them with Airflow.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from provider.ui.plugin import fastapi_app, nav_view


class GpuClusterPlugin(AirflowPlugin):
    """Serves the page from the api-server and puts it in the UI's navigation."""

    name = "gpu_cluster"
    fastapi_apps = [fastapi_app()]
    external_views = [nav_view()]
