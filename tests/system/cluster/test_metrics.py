"""GPU metrics by task, as the topology's Prometheus scrapes them from the node agents (docs/metrics.md).

A job holds two GPUs on a pool with queues; while it runs, Prometheus' query API answers for
its GPUs by ``dag_id`` and ``task_id`` (and names its queue); once its container has died, the
series lose its labels within one sample of the agent and one scrape. When the container died
is the engine's own account (its event stream), and the queries are evaluated at times relative
to it, so the bound is checked exactly, not by when the test happened to look.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import eventually
from tests.system.cluster.observe import EngineEvents, promql
from tools.cluster.prometheus import JOB, SCRAPE_INTERVAL_S
from tools.cluster.topology import Cluster

pytestmark = pytest.mark.system

METRICS_POOL = "gpu_pool_metrics"
DAG_ID, TASK_ID = "queue_job", "job"
AGENT_INTERVAL_S = 1.0  # the agents' default --interval
SLACK_S = 1.0  # one scrape's and one sample's own duration


def test_prometheus_names_the_task_on_its_gpus_until_it_ends(cluster: Cluster, events: EngineEvents) -> None:
    up = promql(cluster, f'up{{job="{JOB}"}} * on (instance) gpu_docker_agent_engine_up')
    assert sorted((r["metric"]["instance"], r["value"][1]) for r in up) == [(f"{h}:9400", "1") for h in cluster.hosts]

    cluster.add_connection(METRICS_POOL, "gpu_docker_pool", extra={
        "hosts": [f"gpu_{h}" for h in cluster.hosts], "queues": {"vision": {"quota": {"gpus": 12}}}})
    try:
        run_id = cluster.api.trigger(DAG_ID, {"pool": METRICS_POOL, "queue": "vision", "gpus": 2, "seconds": 12})
        by_task = f'DCGM_FI_DEV_GPU_UTIL{{dag_id="{DAG_ID}", task_id="{TASK_ID}", run_id="{run_id}"}}'
        series = eventually(lambda: promql(cluster, by_task), 180, interval_s=1, what="the job's GPUs in Prometheus",
                            until=lambda result: len(result) == 2)
        (started,) = events.of_run(run_id)
        labels = [s["metric"] for s in series]
        assert {(m["Hostname"], m["gpu"]) for m in labels} == {(started.host, g) for g in started.gpus}
        assert all(m["device"] == f"nvidia{m['gpu']}" and m["modelName"] == cluster.spec.gpu_model for m in labels)
        assert {(m["queue"], m["map_index"]) for m in labels} == {("vision", "-1")}
        per_dag = promql(cluster, f'sum by (dag_id) (DCGM_FI_DEV_GPU_UTIL{{dag_id="{DAG_ID}"}})')
        assert [r["metric"] for r in per_dag] == [{"dag_id": DAG_ID}]

        assert cluster.api.wait_for_run(DAG_ID, run_id, timeout=120) == "success"
        (ended,) = events.of_run(run_id)
        assert ended.die_ns is not None
        died = ended.die_ns / 1e9
        gone_by = died + AGENT_INTERVAL_S + SCRAPE_INTERVAL_S + SLACK_S
        eventually(time.time, 30, interval_s=0.5, what="Prometheus past the bound", until=lambda now: now > gone_by + 1)
        assert len(promql(cluster, by_task, at=died - 0.5)) == 2  # held until it died
        assert promql(cluster, by_task, at=gone_by) == []  # gone one sample and one scrape later
        free = promql(cluster, f'DCGM_FI_DEV_GPU_UTIL{{Hostname="{ended.host}", dag_id=""}}', at=gone_by)
        assert set(ended.gpus) <= {r["metric"]["gpu"] for r in free}  # its GPUs: back with no task
    finally:
        cluster.api.request("DELETE", f"/api/v2/connections/{METRICS_POOL}")
