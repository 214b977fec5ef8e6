"""Task attribution of the agent's GPU series against a real Docker engine (docs/metrics.md).

The engine has the stand-in NVIDIA driver (``PrivateDockerd(simulated_gpus=True)``), so task
containers request GPUs by device id exactly as the operator makes them; the agent's GPUs are
simulated (no GPU here). What is checked is the agent's ``/metrics`` as Prometheus reads it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from provider.task_instance import GPU_QUEUE_LABEL, TaskInstanceRef
from tests.conftest import eventually
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd

TEST_LABEL = "gpu-docker-test.attribution"


@dataclass
class Host:
    engine: PrivateDockerd
    agent: RunningAgent


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    workdir: Path = tmp_path_factory.mktemp("attribution")
    engine = PrivateDockerd("attr", simulated_gpus=True).start()
    agent = None
    try:
        engine.load(TESTBOX_IMAGE)
        agent = start_agent(workdir, "attr", gpus(3, "A100-80GB", 81920, util=30.0), engine=engine.url)
        yield Host(engine, agent)
    finally:
        if agent is not None:
            stop_agent(agent.process)
        with engine.client() as client:
            for c in client.containers.list(all=True, filters={"label": TEST_LABEL}):
                c.remove(force=True)
        engine.stop()


def run_task(engine: PrivateDockerd, task: TaskInstanceRef, gpu_ids: list[str], queue: str) -> str:
    """A running task container as the operator makes it: the task's labels, GPUs by device id."""
    with engine.client() as client:
        container = client.containers.run(
            TESTBOX_IMAGE, ["sleep", "300"], detach=True, network_mode="none",
            labels={**task.to_labels(), GPU_QUEUE_LABEL: queue, TEST_LABEL: "1"},
            device_requests=[docker.types.DeviceRequest(driver="nvidia", device_ids=gpu_ids,
                                                        capabilities=[["gpu"]])],
        )
        return str(container.id)


def scrape(agent: RunningAgent) -> dict[str, Any]:
    text = httpx.get(agent.url + "/metrics", timeout=5).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def holders(families: dict[str, Any]) -> dict[str, set[tuple[str, ...]]]:
    """GPU index -> the (dag_id, task_id, run_id, map_index, queue) of its utilisation series."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for s in families["DCGM_FI_DEV_GPU_UTIL"].samples:
        found.setdefault(s.labels["gpu"], set()).add(
            tuple(s.labels[k] for k in ("dag_id", "task_id", "run_id", "map_index", "queue")))
    return found


def sample_after(agent: RunningAgent, moment: float) -> dict[str, Any]:
    """The first sample the agent took after ``moment`` (Unix time)."""
    return eventually(lambda: scrape(agent), 10, interval_s=0.1, what="a sample after the change",
                      until=lambda f: f["gpu_docker_agent_sample_timestamp_seconds"].samples[0].value > moment)


def test_task_labels_follow_the_containers_on_the_engine(host: Host) -> None:
    train = TaskInstanceRef("train_dag", "train", "manual__1", 2, try_number=1)
    other = TaskInstanceRef("eval_dag", "evaluate", "manual__2")
    first = run_task(host.engine, train, ["0", "1"], "vision")
    second = run_task(host.engine, other, ["1"], "")  # GPU 1 is shared
    families = eventually(lambda: scrape(host.agent), 10, interval_s=0.1, what="both tasks in the GPU series",
                          until=lambda f: len(holders(f).get("1", ())) == 2)
    assert families["gpu_docker_agent_engine_up"].samples[0].value == 1
    assert holders(families) == {
        "0": {("train_dag", "train", "manual__1", "2", "vision")},
        "1": {("train_dag", "train", "manual__1", "2", "vision"), ("eval_dag", "evaluate", "manual__2", "-1", "")},
        "2": {("", "", "", "", "")},
    }
    assert {s.value for s in families["DCGM_FI_DEV_GPU_UTIL"].samples} == {30.0}

    # A container that exited holds no GPU, even before it is removed.
    with host.engine.client() as client:
        container = client.containers.get(second)
        container.kill()
        container.wait()
        stopped = time.time()
    assert holders(sample_after(host.agent, stopped))["1"] == {("train_dag", "train", "manual__1", "2", "vision")}

    with host.engine.client() as client:
        client.containers.get(first).remove(force=True)
        removed = time.time()
    assert holders(sample_after(host.agent, removed)) == {k: {("", "", "", "", "")} for k in ("0", "1", "2")}
