"""Two teams share the topology's pool through queues (docs/queues.md).

The pool connection ``gpu_pool_teams`` declares queue ``vision`` with a quota of 8 GPUs and
``nlp`` with 4, over the topology's 3 hosts of 4 GPUs. ``nlp`` first takes all 12 (it borrows
vision's idle 8); while its work runs, an ``nlp`` task of 2 GPUs, five ``vision`` tasks of 1 GPU
and one urgent ``vision`` task of 2 GPUs (priority weight 10) come, in that order, and wait in
the triggerer; then nlp's work ends, 2 GPUs at a time. What is
checked comes from the engines' event streams (when each container started), Airflow's REST
API, the GPU cluster page's JSON and Prometheus (the agents' count of waiting tasks), not from
the provider's own records.
"""

from __future__ import annotations

import urllib.error
from typing import Any

import pytest

from tests.conftest import eventually
from tests.system.cluster.observe import EngineEvents, promql
from tools.cluster.topology import Cluster

pytestmark = pytest.mark.system

TEAM_POOL = "gpu_pool_teams"
QUEUES = {"vision": {"quota": {"gpus": 8}}, "nlp": {"quota": {"gpus": 4}}}
JOB, URGENT = "queue_job", "queue_job_urgent"
HELD_S = 600  # the nlp work that fills the pool runs until the test marks it failed


def team_pool(cluster: Cluster) -> dict[str, Any]:
    """The team pool as the GPU cluster page shows it."""
    doc = cluster.api.request("GET", "/gpu-cluster/api/cluster")
    return next(p for p in doc["pools"] if p["name"] == TEAM_POOL)


def submit(cluster: Cluster, queue: str, gpus: int, seconds: int, dag_id: str = JOB) -> str:
    return cluster.api.trigger(dag_id, {"pool": TEAM_POOL, "queue": queue, "gpus": gpus, "seconds": seconds})


def end(cluster: Cluster, run_id: str) -> None:
    """Mark the run's job failed: Airflow stops its container, and its GPUs are free."""
    cluster.api.request("PATCH", f"/api/v2/dags/{JOB}/dagRuns/{run_id}/taskInstances/job", {"new_state": "failed"})


def line_of(cluster: Cluster) -> list[str]:
    """The run ids in the team pool's line, in the order they start."""
    queues = team_pool(cluster)["queues"]
    return [w["task"]["run_id"] for w in queues["line"]] if queues else []


def test_the_team_below_its_share_and_the_urgent_task_start_first(cluster: Cluster, events: EngineEvents) -> None:
    cluster.add_connection(TEAM_POOL, "gpu_docker_pool", extra={
        "hosts": [f"gpu_{h}" for h in cluster.hosts], "queues": QUEUES})
    held: list[str] = []
    try:
        held = [submit(cluster, "nlp", 2, HELD_S) for _ in range(6)]
        eventually(lambda: sum(len(events.of_run(r)) for r in held), 240, interval_s=1,
                   what="nlp's six jobs running on all 12 GPUs", until=lambda n: n == 6)
        rows = eventually(lambda: {q["name"]: q for q in team_pool(cluster)["queues"]["queues"]}, 30, interval_s=1,
                          what="the page's reading after the six jobs started (one per refresh period)",
                          until=lambda r: r["nlp"]["used"]["gpus"] == 12)
        assert (rows["nlp"]["used"]["gpus"], rows["nlp"]["borrowed"]["gpus"]) == (12, 8), rows
        assert (rows["vision"]["quota"]["gpus"], rows["vision"]["lent"]["gpus"]) == (8, 8), rows

        later = submit(cluster, "nlp", 2, 3)
        eventually(lambda: line_of(cluster), 120, interval_s=1, what="the later nlp job in line",
                   until=lambda line: line == [later])
        low = [submit(cluster, "vision", 1, 3) for _ in range(5)]
        eventually(lambda: line_of(cluster), 180, interval_s=1, what="five vision jobs in line",
                   until=lambda line: len(line) == 6)
        urgent = submit(cluster, "vision", 2, 3, URGENT)
        line = eventually(lambda: line_of(cluster), 120, interval_s=1, what="the urgent job in line",
                          until=lambda line: len(line) == 7)
        # vision is far below its share (0 of 8 in use, nlp borrows 8): its jobs come first, the
        # urgent one at their head; the earlier nlp job comes last.
        assert line[0] == urgent and set(line[1:6]) == set(low) and line[6] == later, line
        # The same line in Prometheus, from the agents: tasks waiting per queue (docs/metrics.md).
        query = f'sum by (queue) (gpu_docker_tasks_waiting{{pool="{TEAM_POOL}"}})'
        eventually(lambda: {r["metric"]["queue"]: float(r["value"][1]) for r in promql(cluster, query)}, 30,
                   interval_s=1, what="Prometheus counting six vision tasks and one nlp task waiting",
                   until=lambda waiting: waiting == {"vision": 6.0, "nlp": 1.0})
        first_try = cluster.api.xcom(URGENT, urgent, "job", key="placement")
        assert "queue vision: 0 of 8 GPUs in use; nlp borrows 8; position 1 of 7" in first_try["queue"], first_try

        # Two GPUs come free: the urgent job takes them, although the five vision jobs waited
        # longer and the nlp job longest, and it would fit.
        end(cluster, held[0])
        eventually(lambda: events.of_run(urgent), 120, interval_s=0.5, what="the urgent job started")
        assert not any(events.of_run(r) for r in [*low, later])
        # Two more: the vision jobs start as GPUs come free (vision's share stays below the 8
        # GPUs nlp keeps), the nlp job after the last of them.
        end(cluster, held[1])
        for run_id in [urgent, *low, later]:
            dag_id = URGENT if run_id == urgent else JOB
            assert cluster.api.wait_for_run(dag_id, run_id, timeout=300) == "success", run_id
    finally:
        for run_id in held:
            try:
                end(cluster, run_id)
            except urllib.error.HTTPError:
                pass  # ended already
        cluster.api.request("DELETE", f"/api/v2/connections/{TEAM_POOL}")

    started = {r: min(s.start_ns for s in events.of_run(r)) for r in [urgent, *low, later]}
    assert started[urgent] < min(started[r] for r in low), started
    assert max(started[r] for r in low) < started[later], started
    placed = cluster.api.xcom(JOB, later, "job", key="placement")
    assert placed["queue"]["name"] == "nlp" and placed["queue"]["waits_for"] is None, placed
    log = cluster.api.task_log_text(JOB, low[0], "job")
    assert "waits in line: queue vision" in log, log[-3000:]
