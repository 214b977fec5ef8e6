"""A mount taken from ``dag_run.conf`` and triggered over REST cannot reach the engine's socket.

The DAG ``gpu_docker_mount_from_conf`` mounts whatever its run's ``conf`` names. Triggered with
the socket of the engine its host connection names, its task fails before anything exists on
that engine (no container, no claim: the engine's own event log shows none for the run), and
its log names the rule. The same DAG with a named volume runs, so the failure is the rule's.
"""

from __future__ import annotations

import time

import pytest

from provider.task_instance import LABEL_PREFIX
from tests.conftest import settled
from tests.system.conftest import containers_of_run
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID = "gpu_docker_mount_from_conf"
VOLUME = "gpu_docker_mount_policy_test"


def engine_events(engine: PrivateDockerd, run_id: str, since: float) -> list[dict[str, object]]:
    """Everything the engine did to containers of ``run_id`` since ``since``."""
    with engine.client() as c:
        return list(c.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                             filters={"label": f"{LABEL_PREFIX}.run_id={run_id}"}))


def test_the_engine_socket_from_conf_is_refused_before_anything_is_created(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    socket = system_engine.url.removeprefix("unix://")
    since = time.time()
    run_id = airflow_stack.trigger(DAG_ID, {"mount": f"{socket}:/var/run/docker.sock"})
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=120) == "failed"
    log = airflow_stack.task_log_text(DAG_ID, run_id, "list_data")
    assert "SpecError" in log and "the container engine's socket" in log and "allowed_mount_sources" in log, log
    assert "Placed on" not in log and "Starting" not in log
    assert engine_events(system_engine, run_id, since) == []
    assert containers_of_run(system_engine, run_id) == []


def test_the_same_dag_runs_with_a_named_volume(airflow_stack: LocalAirflow, system_engine: PrivateDockerd) -> None:
    since = time.time()
    try:
        run_id = airflow_stack.trigger(DAG_ID, {"mount": f"{VOLUME}:/data:ro"})
        assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=120) == "success"
        assert settled(lambda: containers_of_run(system_engine, run_id)) == []
        # The event log the refused run is read from does show a run's containers.
        assert "create" in {e.get("Action") for e in engine_events(system_engine, run_id, since)}
    finally:
        with system_engine.client() as c:
            for volume in c.volumes.list(filters={"name": VOLUME}):
                volume.remove(force=True)
