"""``@task.gpu_docker`` in a real Airflow: TaskFlow functions run in an image on a GPU host.

The DAG ``taskflow_on_gpu`` (tests/system/dags/taskflow_jobs.py) maps a function over an
upstream XCom, passes a one-million-character argument and has a function that raises; the
TaskFlow variant of the example pipeline trains the classifier in a function.
"""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest

from provider.clients.hosts import HostConfig
from tests.conftest import settled
from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import REPO, LocalAirflow

pytestmark = pytest.mark.system
DAG_ID = "taskflow_on_gpu"


def dag_module() -> ModuleType:
    """The test DAG's file, imported here, so its functions can also run in this process."""
    spec = importlib.util.spec_from_file_location("taskflow_jobs", REPO / "tests" / "system" / "dags" / "taskflow_jobs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process(module: ModuleType, task_id: str, *args: Any, **kwargs: Any) -> Any:
    """What the decorated function returns when called here, in the test's Python."""
    return getattr(module, task_id).function(*args, **kwargs)


def test_taskflow_functions_run_on_the_pool_and_return_what_they_return_in_process(
    airflow_stack: LocalAirflow, gpu_host: HostConfig, system_engine: PrivateDockerd
) -> None:
    run_id = airflow_stack.trigger(DAG_ID, {})
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=300) == "failed"  # ``fails`` fails, alone
    tis = airflow_stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
    assert states == {("inputs", -1): "success", ("text", -1): "success", ("digest", -1): "success",
                      ("fails", -1): "failed", **{("summarise", k): "success" for k in range(3)}}, {
        key: airflow_stack.task_log_text(DAG_ID, run_id, key[0], map_index=key[1])[-3000:]
        for key, state in states.items() if state != "success" and key[0] != "fails"}

    module = dag_module()
    for k, kwargs in enumerate(airflow_stack.xcom(DAG_ID, run_id, "inputs")):
        returned = airflow_stack.xcom(DAG_ID, run_id, "summarise", map_index=k)
        assert returned == in_process(module, "summarise", scale=3.0, **kwargs)
        container = airflow_stack.xcom(DAG_ID, run_id, "summarise", map_index=k, key="container")
        assert container["host"] == gpu_host.name and container["gpus"] == [0] and container["exit_code"] == 0
        assert f"summarising batch-{k}" in airflow_stack.task_log_text(DAG_ID, run_id, "summarise", map_index=k)

    text = airflow_stack.xcom(DAG_ID, run_id, "text")
    assert len(text) == module.LARGE
    assert airflow_stack.xcom(DAG_ID, run_id, "digest") == in_process(module, "digest", text)

    log = airflow_stack.task_log_text(DAG_ID, run_id, "fails")
    assert "Traceback (most recent call last)" in log and "ValueError: batch 7 has no labels" in log
    assert "raise ValueError(f" in log  # the function's own line, quoted from its source
    assert settled(lambda: containers_of_run(system_engine, run_id)) == []


def test_taskflow_variant_of_the_example_pipeline_trains_the_classifier(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    dag_id = "train_image_classifier_taskflow"
    run_id = airflow_stack.trigger(dag_id, {"epochs": 20, "seed": 3})
    assert airflow_stack.wait_for_run(dag_id, run_id, timeout=300) == "success"
    result = airflow_stack.xcom(dag_id, run_id, "train")
    assert result["epochs"] == 20 and result["test_accuracy"] >= 0.9  # a random guess gets 0.1
    assert float(airflow_stack.xcom(dag_id, run_id, "report")) == result["test_accuracy"]
    assert airflow_stack.xcom(dag_id, run_id, "train", key="container")["host"] == "gpu_docker_default"
    assert "epoch 20/20 loss=" in airflow_stack.task_log_text(dag_id, run_id, "train")
    assert json.dumps(result)  # the XCom is plain JSON
    assert settled(lambda: containers_of_run(system_engine, run_id)) == []
