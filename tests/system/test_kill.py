"""A killed task leaves no container behind: SIGTERM to the task process, and "mark failed"."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID, TASK_ID = "gpu_docker_sleeper", "sleep"


def running_task(airflow: LocalAirflow, engine: PrivateDockerd) -> tuple[str, dict[str, object]]:
    """Trigger the sleeper and wait until its container runs; return the run id and the TI."""
    run_id = airflow.trigger(DAG_ID, {})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ti = airflow.task_instance(DAG_ID, run_id, TASK_ID)
        running = [c for c in containers_of_run(engine, run_id) if c["State"] == "running"]
        if ti["state"] == "running" and running and ti.get("pid"):
            return run_id, ti
        time.sleep(0.5)
    raise TimeoutError(f"the sleeper's container did not start: {ti}")


def wait_gone(engine: PrivateDockerd, run_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while containers_of_run(engine, run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    return containers_of_run(engine, run_id)


def test_sigterm_to_the_task_process_removes_the_container(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    run_id, ti = running_task(airflow_stack, system_engine)
    os.kill(int(ti["pid"]), signal.SIGTERM)  # type: ignore[call-overload]
    left = wait_gone(system_engine, run_id)
    assert left == [], airflow_stack.task_log_text(DAG_ID, run_id, TASK_ID)[-4000:]
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=120) == "failed"


def test_marking_the_task_failed_removes_the_container(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    run_id, _ = running_task(airflow_stack, system_engine)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
    airflow_stack.request("PATCH", path, {"new_state": "failed"})
    assert wait_gone(system_engine, run_id) == []
    assert airflow_stack.task_instance(DAG_ID, run_id, TASK_ID)["state"] == "failed"
