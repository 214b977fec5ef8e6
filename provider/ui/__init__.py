"""The "GPU cluster" page of the Airflow UI: every pool's hosts, GPUs, holders and waiters.

``plugins/gpu_cluster.py`` registers it with Airflow; :mod:`provider.ui.plugin` holds what that
plugin needs at import time (cheap), :mod:`provider.ui.app` the FastAPI app that the
api-server serves, :mod:`provider.ui.cluster_sources` what the app reads and
:mod:`provider.ui.cluster_view` how it becomes the page's JSON document.
"""
