"""Airflow UI plugin: the "GPU cluster" page (hosts, GPUs, which task holds each, who waits).

The plugin is :class:`provider.ui.plugin.GpuClusterPlugin`, which an installed distribution
registers through its ``airflow.plugins`` entry point; this file registers the same plugin
for a checkout used as a plugins folder without installing it (Airflow loads a plugin name once).
"""

from __future__ import annotations

from provider.ui.plugin import GpuClusterPlugin

__all__ = ["GpuClusterPlugin"]
