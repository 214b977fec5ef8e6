"""The example training pipeline in a real Airflow, triggered over REST as the platform does:
on the default host (no pool), and on a pool defined as ``./run example`` defines it."""

from __future__ import annotations

import json

import pytest

from provider.clients.hosts import HostConfig
from tests.conftest import eventually, settled
from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow
from tools.run_example import define_pool

pytestmark = pytest.mark.system
DAG_ID = "train_image_classifier"


def test_example_pipeline_trains_a_real_classifier(airflow_stack: LocalAirflow, system_engine: PrivateDockerd) -> None:
    run_id = airflow_stack.trigger(DAG_ID, {"epochs": 30})
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
    accuracy = float(airflow_stack.xcom(DAG_ID, run_id, "report"))
    assert accuracy >= 0.9  # a random guess gets 0.1
    outcome = airflow_stack.xcom(DAG_ID, run_id, "train")
    assert outcome["exit_code"] == 0 and outcome["result"]["test_accuracy"] == accuracy
    assert outcome["host"] == "gpu_docker_default"  # no gpu_pool: the default host, as before
    # The epoch lines are in the task log, as Airflow serves it and as the file on disk holds it.
    served = airflow_stack.task_log_text(DAG_ID, run_id, "train")
    for epoch in (1, 15, 30):
        assert f"epoch {epoch}/30 loss=" in served
    on_disk = airflow_stack.task_log_file(DAG_ID, run_id, "train").read_text()
    events = [json.loads(line)["event"] for line in on_disk.splitlines() if line.startswith("{")]
    assert sum(e.startswith("epoch ") for e in events) == 30
    assert settled(lambda: containers_of_run(system_engine, run_id)) == []


def test_example_pipeline_is_placed_through_the_pool_the_example_defines(
    airflow_stack: LocalAirflow, gpu_host: HostConfig
) -> None:
    """The connections ``./run example`` makes over REST put the training on the pool's host,
    chosen by placement from what its node agent measured, and the GPU cluster page shows it."""
    pool, host = "example_sys_pool", HostConfig(name="example_sys_host", docker_url=gpu_host.docker_url,
                                                agent_url=gpu_host.agent_url)
    define_pool(airflow_stack, pool, host)
    define_pool(airflow_stack, pool, host)  # a second run of the example overwrites, not fails
    run_id = airflow_stack.trigger(DAG_ID, {"epochs": 3, "gpu_pool": pool})
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
    assert airflow_stack.xcom(DAG_ID, run_id, "train")["host"] == host.name
    placement = airflow_stack.xcom(DAG_ID, run_id, "train", key="placement")
    assert placement["host"] == host.name and list(placement["scores"]) == [host.name]
    assert placement["unmeasured"] is None  # the agent's measurements, not a blind choice
    # The page reads the hosts once per refresh period: the pool defined above shows within one.
    page = eventually(lambda: airflow_stack.request("GET", "/gpu-cluster/api/cluster"), 30, interval_s=1,
                      what="the new pool on the page", until=lambda p: any(x["name"] == pool for x in p["pools"]))
    assert {"name": pool, "hosts": [host.name], "queues": None} in page["pools"]  # a pool without queues
    shown = next(h for h in page["hosts"] if h["name"] == host.name)
    assert shown["reachable"] and shown["cpu"]["count"] >= 1 and shown["memory"]["total_mb"] > 0


def test_provider_is_registered_and_dags_import_cleanly(airflow_stack: LocalAirflow) -> None:
    assert "airflow-provider-gpu-docker" in airflow_stack.airflow("providers", "list")
    out = airflow_stack.airflow("dags", "list-import-errors", "--output", "json")
    assert json.loads(out.strip().splitlines()[-1]) == []
