"""The example training pipeline in a real Airflow, triggered over REST as the platform does."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID = "train_image_classifier"


def test_example_pipeline_trains_a_real_classifier(airflow_stack: LocalAirflow, system_engine: PrivateDockerd) -> None:
    run_id = airflow_stack.trigger(DAG_ID, {"epochs": 30})
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
    accuracy = float(airflow_stack.xcom(DAG_ID, run_id, "report"))
    assert accuracy >= 0.9  # a random guess gets 0.1
    outcome = airflow_stack.xcom(DAG_ID, run_id, "train")
    assert outcome["exit_code"] == 0 and outcome["result"]["test_accuracy"] == accuracy
    # The epoch lines are in the task log, as Airflow serves it and as the file on disk holds it.
    served = airflow_stack.task_log_text(DAG_ID, run_id, "train")
    for epoch in (1, 15, 30):
        assert f"epoch {epoch}/30 loss=" in served
    on_disk = airflow_stack.task_log_file(DAG_ID, run_id, "train").read_text()
    events = [json.loads(line)["event"] for line in on_disk.splitlines() if line.startswith("{")]
    assert sum(e.startswith("epoch ") for e in events) == 30
    assert containers_of_run(system_engine, run_id) == []


def test_provider_is_registered_and_dags_import_cleanly(airflow_stack: LocalAirflow) -> None:
    assert "airflow-provider-gpu-docker" in airflow_stack.airflow("providers", "list")
    out = airflow_stack.airflow("dags", "list-import-errors", "--output", "json")
    assert json.loads(out.strip().splitlines()[-1]) == []
