"""Airflow's own task logs in object storage (``provider.logs.remote_logging``), read back over REST.

A second Airflow on loopback is configured with remote logging to a ``file://`` folder and
``delete_local_logs``: after the run the task log exists only in the remote folder, and the
REST log endpoint still serves the training container's epoch lines from there.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import eventually
from tools.dockerd import PrivateDockerd
from tools.local_airflow import REPO, LocalAirflow

pytestmark = pytest.mark.system
DAG_ID = "train_image_classifier"


@pytest.fixture(scope="module")
def remote_airflow(system_engine: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    home = tmp_path_factory.mktemp("airflow-remote")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / f"{DAG_ID}.py", dags)
    airflow = LocalAirflow(home, dags_folder=dags, extra_env={
        "AIRFLOW_CONN_GPU_DOCKER_DEFAULT": json.dumps({"conn_type": "gpu_docker_host", "host": system_engine.url}),
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"file://{home}/remote-logs",
        "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS": "provider.logs.remote_logging.LOGGING_CONFIG",
        "AIRFLOW__LOGGING__DELETE_LOCAL_LOGS": "True",
    })
    airflow.start()
    try:
        yield airflow
    finally:
        airflow.stop()


def test_task_logs_go_to_object_storage_and_are_read_back_from_there(remote_airflow: LocalAirflow) -> None:
    run_id = remote_airflow.trigger(DAG_ID, {"epochs": 4})
    state = remote_airflow.wait_for_run(DAG_ID, run_id, timeout=300)
    assert state == "success", remote_airflow.task_log_text(DAG_ID, run_id, "train")[-3000:]
    relative = Path(f"dag_id={DAG_ID}") / f"run_id={run_id}" / "task_id=train" / "attempt=1.log"
    stored = remote_airflow.home / "remote-logs" / relative
    # The worker uploads once the task process has ended.
    eventually(lambda: stored.is_file() or sorted(str(p) for p in (remote_airflow.home / "remote-logs").rglob("*")),
               60, interval_s=0.5, what=f"the task log stored as {relative}", until=lambda found: found is True)
    events = [json.loads(line)["event"] for line in stored.read_text().splitlines() if line.startswith("{")]
    assert [e for e in events if e.startswith("epoch ")][-1].startswith("epoch 4/4 loss=")
    assert not (remote_airflow.log_folder / relative).exists()  # delete_local_logs: only the remote copy
    served = remote_airflow.task_log_text(DAG_ID, run_id, "train")
    assert "epoch 4/4 loss=" in served
