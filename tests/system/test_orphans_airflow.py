"""No orphan outlives its task, on a real Airflow (LocalExecutor): a task with no retries whose
task process is killed with SIGKILL while its container trains ends failed, and the api-server's
orphan sweep stops and removes the container and releases its GPU claim within 2 minutes.

The sweep runs at its default interval (30 s). The time is measured from the task instance's
end date to the engine's record of the container's removal, on the same machine's clock.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from provider.labels import CLAIM_LABEL, RESERVATION_LABEL
from provider.stat_names import ORPHAN_SWEEPS, ORPHANS_REAPED
from provider.task_instance import LABEL_PREFIX
from tests.conftest import eventually, settled
from tests.statsd_receiver import StatsdReceiver
from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID, TASK_ID = "gpu_docker_gpu_sleeper", "sleep_on_gpu"
LIMIT_S = 120.0


def running_with_claim(airflow: LocalAirflow, engine: PrivateDockerd, run_id: str) -> tuple[dict[str, Any], str]:
    """The task instance once its container runs with its claim, and the container's id."""

    def look() -> tuple[str | None, dict[str, Any]]:
        ti = airflow.task_instance(DAG_ID, run_id, TASK_ID)
        made = containers_of_run(engine, run_id)
        running = [c for c in made if c["State"] == "running" and RESERVATION_LABEL not in c["Labels"]]
        if ti["state"] == "running" and ti.get("pid") and running and any(CLAIM_LABEL in c["Labels"] for c in made):
            return str(running[0]["Id"]), ti
        return None, ti

    container_id, ti = eventually(look, 180, interval_s=0.5, until=lambda seen: seen[0] is not None,
                                  what="the GPU sleeper's container running with its claim")
    assert container_id is not None
    return ti, container_id


def ended(airflow: LocalAirflow, run_id: str, timeout: float = 120) -> dict[str, Any]:
    return eventually(lambda: airflow.task_instance(DAG_ID, run_id, TASK_ID), timeout, interval_s=0.5,
                      what="the task instance ended after its process was killed",
                      until=lambda ti: ti["state"] not in ("running", "queued", "scheduled", None) and ti.get("end_date"))


def removed_at(engine: PrivateDockerd, container_id: str, since: float) -> float:
    """When the engine removed the container, from its event log."""
    with engine.client() as c:
        events = c.api.events(since=int(since), until=int(time.time()) + 1, decode=True,
                              filters={"type": "container", "event": "destroy", "container": container_id})
        [event] = list(events)
    return float(event["timeNano"]) / 1e9


def reaped_metrics(statsd: StatsdReceiver) -> int:
    """The containers of the DAG that the api-server's sweeps counted as stopped and removed."""
    return sum(int(m.value) for m in statsd.metrics(f"airflow.{ORPHANS_REAPED}")
               if (m.tags.get("dag_id"), m.tags.get("task_id")) == (DAG_ID, TASK_ID))


def test_a_lost_workers_container_is_removed_once_its_task_instance_has_failed(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd, statsd: StatsdReceiver, report: Callable[[str], None]
) -> None:
    reaped_before = reaped_metrics(statsd)
    since = time.time()
    run_id = airflow_stack.trigger(DAG_ID, {})
    ti, container_id = running_with_claim(airflow_stack, system_engine, run_id)
    os.kill(int(ti["pid"]), signal.SIGKILL)  # the task process, as the kernel's OOM killer ends it: no on_kill

    ti = ended(airflow_stack, run_id)
    assert ti["state"] == "failed", ti
    end = datetime.fromisoformat(ti["end_date"]).timestamp()
    assert any(c["Id"] == container_id for c in containers_of_run(system_engine, run_id)), \
        "nothing is left to sweep: the container went with the task process"

    assert settled(lambda: containers_of_run(system_engine, run_id), end + LIMIT_S + 30 - time.time()) == [], \
        "the container or its claim is still there"
    seconds = removed_at(system_engine, container_id, since) - end
    report(f"orphaned container removed {seconds:.1f} s after its task instance ended (limit {LIMIT_S:g} s)")
    assert seconds < LIMIT_S

    with pytest.raises(urllib.error.HTTPError) as refused:
        airflow_stack.request("GET", "/gpu-orphans/", auth=False)
    assert refused.value.code == 401  # what the sweep did is shown to signed-in users only
    doc = airflow_stack.request("GET", "/gpu-orphans/")
    [reaped] = [r for r in doc["reaped"] if r["run_id"] == run_id]
    assert (reaped["task_id"], reaped["container_id"], reaped["error"]) == (TASK_ID, container_id, None)
    assert "failed" in reaped["reason"]
    log = airflow_stack.processes.log_path("api-server").read_text(errors="replace")
    assert f"container {container_id[:12]} of task {DAG_ID}.{TASK_ID} of run {run_id}" in log

    # Airflow's metrics (docs/metrics.md): the sweeps, and this container among those reaped.
    eventually(lambda: reaped_metrics(statsd), 10, what="the reaped container counted in the metrics",
               until=lambda n: n == reaped_before + 1)
    assert statsd.metrics(f"airflow.{ORPHAN_SWEEPS}")
