"""A killed task leaves no container behind: "mark failed" and "clear" in the REST API (as in
the UI). SIGTERM to a task that Airflow still counts as running is a worker going away, not a
kill: the container is handed over, and with no try coming the orphan sweep removes it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from provider.labels import RESERVATION_LABEL
from tests.conftest import eventually, settled
from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID, TASK_ID = "gpu_docker_sleeper", "sleep"


def running_task(airflow: LocalAirflow, engine: PrivateDockerd) -> tuple[str, dict[str, object]]:
    """Trigger the sleeper and wait until its container runs; return the run id and the TI."""
    run_id = airflow.trigger(DAG_ID, {})

    def running() -> tuple[bool, dict[str, object]]:
        ti = airflow.task_instance(DAG_ID, run_id, TASK_ID)
        up = [c for c in containers_of_run(engine, run_id) if c["State"] == "running"]
        return bool(ti["state"] == "running" and up and ti.get("pid")), ti

    _, ti = eventually(running, 120, interval_s=0.5, what="the sleeper's container running",
                       until=lambda seen: seen[0])
    return run_id, ti


def wait_gone(engine: PrivateDockerd, run_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    return settled(lambda: containers_of_run(engine, run_id), timeout)


def task_containers(engine: PrivateDockerd, run_id: str) -> list[dict[str, Any]]:
    """The run's task containers (not claims)."""
    return [c for c in containers_of_run(engine, run_id) if RESERVATION_LABEL not in (c.get("Labels") or {})]


def test_sigterm_while_airflow_counts_the_try_running_hands_over_and_the_sweep_removes_the_orphan(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd, report: Callable[[str], None]
) -> None:
    run_id, ti = running_task(airflow_stack, system_engine)
    os.kill(int(ti["pid"]), signal.SIGTERM)  # type: ignore[call-overload]
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=120) == "failed"  # retries=0: no try comes
    ended = time.monotonic()
    assert [c["State"] for c in task_containers(system_engine, run_id)] == ["running"]  # handed over
    assert "worker is shutting down" in airflow_stack.task_log_text(DAG_ID, run_id, TASK_ID)
    left = wait_gone(system_engine, run_id, timeout=150)
    report(f"orphan of a failed task removed {time.monotonic() - ended:.0f} s after the task ended")
    assert left == []


def test_clearing_a_running_task_removes_its_container(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    run_id, _ = running_task(airflow_stack, system_engine)
    [first] = [c["Id"] for c in task_containers(system_engine, run_id)]
    airflow_stack.request("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", {
        "dry_run": False, "dag_run_id": run_id, "task_ids": [TASK_ID], "only_failed": False})
    eventually(lambda: first not in {c["Id"] for c in task_containers(system_engine, run_id)}, 60, interval_s=0.5,
               what="the cleared try's container removed")
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
    airflow_stack.request("PATCH", path, {"new_state": "failed"})  # the cleared task runs again: end it
    assert wait_gone(system_engine, run_id) == []


def test_marking_the_task_failed_removes_the_container(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    run_id, _ = running_task(airflow_stack, system_engine)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
    airflow_stack.request("PATCH", path, {"new_state": "failed"})
    assert wait_gone(system_engine, run_id) == []
    assert airflow_stack.task_instance(DAG_ID, run_id, TASK_ID)["state"] == "failed"


def test_a_task_timeout_removes_its_container(airflow_stack: LocalAirflow, system_engine: PrivateDockerd) -> None:
    dag_id, task_id = "gpu_docker_timeout", "sleep_too_long"
    run_id = airflow_stack.trigger(dag_id, {})
    seen: set[str] = set()

    def ended() -> object:
        seen.update(c["Id"] for c in task_containers(system_engine, run_id) if c["State"] == "running")
        return airflow_stack.task_instance(dag_id, run_id, task_id)["state"]

    eventually(ended, 120, interval_s=0.5, what="the task ended", until=lambda state: state in ("failed", "success"))
    assert seen, "the container never ran"
    assert airflow_stack.wait_for_run(dag_id, run_id, timeout=60) == "failed"
    assert task_containers(system_engine, run_id) == []  # removed when the timeout struck, not by the sweep
    assert "Timeout" in airflow_stack.task_log_text(dag_id, run_id, task_id)
