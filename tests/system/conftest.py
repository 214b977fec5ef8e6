"""A real Airflow (api-server, scheduler, dag-processor, triggerer) for the system tests.

Its default GPU host is a private Docker engine started here, so the tests never touch the
machine's own engine. The same engine, with a node agent reporting one simulated GPU, is the
host of the connection ``gpu_sys_host`` (for the tests that wait for a GPU). The DAG folder
holds the project's example DAGs and the test DAGs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.clients.hosts import HostConfig
from provider.stat_names import PREFIX
from provider.task_instance import LABEL_PREFIX
from tests.integration.agents import gpus, start_agent, stop_agent
from tests.statsd_receiver import StatsdReceiver
from tools.dockerd import TESTBOX_IMAGE, TRAINER_IMAGE, PrivateDockerd
from tools.local_airflow import REPO, LocalAirflow

pytestmark = pytest.mark.system


GPU_HOST = "gpu_sys_host"
AGENT_TOKEN = "sys-agent-token-7c2e91"  # noqa: S105 - a token in the host's connection; asserted absent from trigger rows


@pytest.fixture(scope="session")
def system_engine() -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd("sys", simulated_gpus=True).start()
    try:
        engine.load(TESTBOX_IMAGE, TRAINER_IMAGE)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def gpu_host(system_engine: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostConfig]:
    """The system engine as a GPU host: a node agent with one simulated GPU beside it."""
    agent = start_agent(tmp_path_factory.mktemp("agent"), GPU_HOST, gpus(1, "A100-80GB", 81920))
    try:
        yield HostConfig(name=GPU_HOST, docker_url=system_engine.url, agent_url=agent.url)
    finally:
        stop_agent(agent.process)


@pytest.fixture(scope="session")
def statsd() -> Iterator[StatsdReceiver]:
    """The StatsD server the system Airflow sends its metrics to."""
    with StatsdReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def airflow_stack(
    system_engine: PrivateDockerd, gpu_host: HostConfig, statsd: StatsdReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalAirflow]:
    """Airflow with StatsD metrics on, as docs/metrics.md turns them on, with InfluxDB tags; the
    provider's metrics only (the allow list), so the receiver keeps no more than the tests read."""
    home = tmp_path_factory.mktemp("airflow")
    dags = home / "dags"
    dags.mkdir()
    for src in [*(REPO / "dags").glob("*.py"), *(REPO / "tests" / "system" / "dags").glob("*.py")]:
        shutil.copy(src, dags / src.name)
    conn = json.dumps({"conn_type": "gpu_docker_host", "host": system_engine.url})
    # The connection carries an agent token (the agent, started without one, ignores it), so
    # that a test can look for it where it must not be.
    gpu_conn = json.dumps({"conn_type": "gpu_docker_host", "host": gpu_host.docker_url, "password": AGENT_TOKEN,
                           "extra": {"agent_url": gpu_host.agent_url}})
    airflow = LocalAirflow(home, dags_folder=dags, extra_env={
        "AIRFLOW_CONN_GPU_DOCKER_DEFAULT": conn, f"AIRFLOW_CONN_{GPU_HOST.upper()}": gpu_conn,
        "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port), "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        "AIRFLOW__METRICS__METRICS_ALLOW_LIST": f"{PREFIX}.",
    })
    airflow.start()
    try:
        yield airflow
    finally:
        airflow.stop()


def containers_of_run(engine: PrivateDockerd, run_id: str) -> list[dict[str, Any]]:
    return engine.containers(f"{LABEL_PREFIX}.run_id={run_id}")


def dag_file(name: str) -> Path:
    return REPO / "dags" / name
