"""Waiting for a GPU in a real Airflow: reschedule mode, and deferral to a real triggerer; the
placement and waiting metrics of the task that waited, at a StatsD server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from provider.clients.hosts import HostConfig
from provider.scheduling.model import PlacementRequest
from provider.stat_names import PLACEMENT_LATENCY, ROOM_WAIT
from tests.conftest import eventually, release_now, reserve_now, settled
from tests.statsd_receiver import Metric, StatsdReceiver
from tests.system.conftest import AGENT_TOKEN, containers_of_run
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID = "wait_for_gpu"
WAITING = {"reschedule_sensor": "up_for_reschedule", "deferred_sensor": "deferred", "waiting_train": "deferred"}


def states(airflow: LocalAirflow, run_id: str) -> dict[str, str]:
    tis = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


def sent_for(statsd: StatsdReceiver, name: str, task_id: str) -> list[Metric]:
    """The metrics ``name`` that Airflow sent for ``task_id`` of the DAG."""
    return [m for m in statsd.metrics(f"airflow.{name}") if (m.tags.get("dag_id"), m.tags.get("task_id")) == (DAG_ID, task_id)]


TRIGGER_ROWS = """
import json
from airflow.models.trigger import Trigger
from airflow.utils.session import create_session
with create_session() as session:
    print(json.dumps([{"classpath": t.classpath, "kwargs": t.kwargs} for t in session.query(Trigger)], default=str))
"""


def stored_triggers(airflow: LocalAirflow) -> tuple[str, list[dict[str, Any]]]:
    """The trigger rows of the metadata database, kwargs decrypted as the triggerer reads them:
    the raw text, and the rows."""
    out = subprocess.run([sys.executable, "-c", TRIGGER_ROWS], env=airflow.env, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout, json.loads(out.stdout.strip().splitlines()[-1])


def test_tasks_wait_without_a_worker_and_go_on_when_the_gpu_is_freed(
    airflow_stack: LocalAirflow, gpu_host: HostConfig, system_engine: PrivateDockerd, statsd: StatsdReceiver,
    report: Callable[[str], None],
) -> None:
    earlier = {name: len(sent_for(statsd, name, "waiting_train")) for name in (PLACEMENT_LATENCY, ROOM_WAIT)}
    held = reserve_now([gpu_host], PlacementRequest(gpus=1), image=TESTBOX_IMAGE)
    try:
        triggered = time.time()
        run_id = airflow_stack.trigger(DAG_ID, {})
        seen: dict[str, set[str]] = {task: set() for task in WAITING}
        train_deferred: list[float] = []  # when the waiting task was first seen deferred: it had found no room

        def states_seen() -> dict[str, set[str]]:
            for task, state in states(airflow_stack, run_id).items():
                seen[task].add(str(state))
            if "deferred" in seen["waiting_train"] and not train_deferred:
                train_deferred.append(time.time())
            return seen

        eventually(states_seen, 180, interval_s=0.5, what="every task seen waiting while the GPU was taken",
                   until=lambda s: all(WAITING[t] in s[t] for t in WAITING))
        # The GPU cluster page lists the tasks that wait (the sensor in reschedule mode only
        # between pokes, so it may or may not be caught waiting at this instant; the page reads
        # once per refresh period, so they show within one).
        listed = eventually(lambda: {w["task_id"]: w for w in airflow_stack.request("GET", "/gpu-cluster/api/cluster")[
            "waiting"] if w["run_id"] == run_id}, 30, interval_s=1, what="the waiting tasks on the page",
            until=lambda found: {"deferred_sensor", "waiting_train"} <= set(found))
        assert listed["waiting_train"]["state"] == "deferred"
        # The deferred sensor's and the deferred operator's triggers are stored with the pool's
        # connection ids; the agent's token (which the triggerer needs, and finds through the
        # connection) is in no row.
        raw, rows = stored_triggers(airflow_stack)
        ours = [r for r in rows if str(r["classpath"]).endswith("GpuAvailableTrigger")]
        assert len(ours) >= 2, rows
        assert [r["kwargs"]["pool"] for r in ours] == [gpu_host.name] * len(ours), ours
        assert AGENT_TOKEN not in raw
    finally:
        released = time.time()
        release_now(held)
    outcome = airflow_stack.wait_for_run(DAG_ID, run_id, timeout=240)
    finished = time.time()
    final = states(airflow_stack, run_id)
    assert outcome == "success", f"the run ended {outcome}: {final}\n" + "\n".join(
        f"--- {t}:\n{airflow_stack.task_log_events(DAG_ID, run_id, t)}" for t, state in final.items() if state != "success")
    assert airflow_stack.xcom(DAG_ID, run_id, "reschedule_sensor") == gpu_host.name
    assert airflow_stack.xcom(DAG_ID, run_id, "deferred_sensor") == gpu_host.name
    train = airflow_stack.xcom(DAG_ID, run_id, "waiting_train")
    assert train["exit_code"] == 0 and train["host"] == gpu_host.name
    assert "trained" in airflow_stack.task_log_text(DAG_ID, run_id, "waiting_train")
    assert settled(lambda: containers_of_run(system_engine, run_id)) == []

    # The task's worker sent its placement's latency, and how long it waited from finding no room
    # (before it was seen deferred) to its claim (after the GPU was freed).
    tags = {"dag_id": DAG_ID, "task_id": "waiting_train", "pool": gpu_host.name, "host": gpu_host.name}
    [latency] = sent_for(statsd, PLACEMENT_LATENCY, "waiting_train")[earlier[PLACEMENT_LATENCY]:]
    [waited] = sent_for(statsd, ROOM_WAIT, "waiting_train")[earlier[ROOM_WAIT]:]
    assert (latency.kind, latency.tags, waited.kind, waited.tags) == ("ms", tags, "ms", tags)
    assert 0 < latency.value < 30_000
    assert (released - train_deferred[0]) * 1000 <= waited.value <= (finished - triggered) * 1000, \
        (waited.value, released - train_deferred[0], finished - triggered)
    report(f"metrics of the waiting task: room_wait {waited.value / 1000:.1f} s (GPU freed "
           f"{released - train_deferred[0]:.1f} s after it was seen deferred), placement_latency {latency.value:.0f} ms")
