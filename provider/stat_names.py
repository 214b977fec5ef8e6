"""The names and tags of the metrics this provider sends through Airflow's ``Stats``.

A deployment's metrics backend (StatsD, OpenTelemetry) sees these names and nothing else of the
provider's code, so they are defined once, here, and listed in ``docs/metrics.md``; every name is
under :data:`PREFIX`, and the backend puts Airflow's own ``[metrics] statsd_prefix`` (or the
OpenTelemetry prefix) in front of that. The operator sends the placement metrics from the
worker, the api-server the orphan sweep's.

Pure values and one pure function, importable from every layer: no Airflow import, so the
names can be checked without one.
"""

from __future__ import annotations

import re

PREFIX = "gpu_docker"
"""The first part of every name: one place for a dashboard's query or an allow list."""

PLACEMENT_LATENCY = f"{PREFIX}.placement_latency"
"""Timer: from the task asking placement for room to its claim made on the chosen host, the
lost claim races in between included and the image pull on that host left out."""
ROOM_WAIT = f"{PREFIX}.room_wait"
"""Timer: from the first time nothing fitted a task to its claim made, for tasks that waited."""
CLAIM_RETRIES = f"{PREFIX}.claim_retries"
"""Counter: claims that lost a race (the room was taken, or the host's claim lock stayed busy)
and made placement read the pool again."""
ORPHAN_SWEEPS = f"{PREFIX}.orphan_sweeps"
"""Counter: orphan sweeps that read the pool to the end."""
ORPHANS_REAPED = f"{PREFIX}.orphans_reaped"
"""Counter: task containers the orphan sweep stopped and removed."""

NAMES = (PLACEMENT_LATENCY, ROOM_WAIT, CLAIM_RETRIES, ORPHAN_SWEEPS, ORPHANS_REAPED)

_NOT_IN_A_TAG = re.compile(r"[^A-Za-z0-9_.-]")


def stat_tags(**values: str | None) -> dict[str, str]:
    """The tags of one metric: those with a value, each value with every character outside
    ``[A-Za-z0-9_.-]`` replaced by ``_``.

    StatsD with InfluxDB tags (``[metrics] statsd_influxdb_enabled``) appends the tags to the
    name and drops the whole metric when the result has any other character; a queue name may
    have one (a pool's queues are named freely), and the metric is worth more than the exact
    spelling of its tag.
    """
    return {key: _NOT_IN_A_TAG.sub("_", value) for key, value in values.items() if value}
