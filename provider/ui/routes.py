"""Where the GPU cluster page lives: its mount point, its route in the UI, its links' base.

Both the plugin declaration (:mod:`provider.ui.plugin`) and the page's app
(:mod:`provider.ui.app`) need these, and neither should import the other for them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf

APP_PREFIX = "/gpu-cluster"
"""Where the api-server mounts the app, below its base URL."""

URL_ROUTE = "gpu-cluster"
"""The page's route in the Airflow UI: ``/plugin/gpu-cluster``."""

TITLE = "GPU cluster"


def base_path() -> str:
    """The path part of ``[api] base_url`` ("" at the root), which every link starts with."""
    return urlsplit(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")
