"""The agent's Prometheus names and the task attribution of its GPU series (docs/metrics.md).

The GPUs are simulated (no GPU on the machines that run this); the engine's answers are plain
dicts shaped as the Engine API sends them, and the unreachable engine is a socket path where
nothing listens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from provider.agent.metrics import make_registry
from provider.agent.sampler import Sampler
from provider.agent.simulated import SimulatedBackend, parse_inventory
from provider.agent.tasks import (
    EngineRead,
    EngineTasks,
    GpuTask,
    QueueWaiting,
    requested_devices,
    task_of,
    waiting_in_line,
)
from provider.labels import OWNER_LABEL, WAIT_LABEL, WAIT_LEASE_LABEL, WAIT_POOL_LABEL, WAIT_QUEUE_LABEL
from provider.task_instance import GPU_QUEUE_LABEL, TaskInstanceRef

NODE_EXPORTER_NAMES = Path(__file__).parent / "data" / "node_exporter_1.5_metrics.txt"
TASK_LABELS = ("dag_id", "task_id", "run_id", "map_index", "queue")


class EngineAnswers:
    """Stands in for :class:`EngineTasks` where the test decides what the engine holds."""

    def __init__(self, tasks: tuple[GpuTask, ...] | None, reason: str | None = None,
                 waiting: tuple[QueueWaiting, ...] = ()) -> None:
        self.url = "unix:///run/engine.sock"
        self.tasks, self.reason, self.waiting = tasks, reason, waiting

    def read(self, now: float) -> EngineRead | None:
        return None if self.tasks is None else EngineRead(self.tasks, self.waiting)


def _families(tmp_path: Path, tasks: Any = None, gpus: int = 4) -> dict[str, Any]:
    inventory = [{"model": "A100-80GB", "memory_total_mb": 81920, "temperature_c": 40, "power_w": 90,
                  "timeline": [[0, 10 * (k + 1), 1000]]} for k in range(gpus)]
    backend = SimulatedBackend(parse_inventory(inventory), lambda: 0.0, uuid_prefix="h")
    sampler = Sampler("h1", backend, cpus=[0], docker_root=str(tmp_path / "absent"), tasks=tasks)
    sampler.refresh()
    text = generate_latest(make_registry(sampler)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _node_exporter_names() -> set[str]:
    lines = NODE_EXPORTER_NAMES.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_no_agent_metric_is_a_node_exporter_metric(tmp_path: Path) -> None:
    theirs = _node_exporter_names()
    # The list is the real one: it holds the names the agent used to export under the same name.
    assert {"node_load1", "node_load5", "node_load15", "process_cpu_seconds_total"} <= theirs and len(theirs) > 900
    ours = set(_families(tmp_path, EngineAnswers(()))) | set(_families(tmp_path / "none", gpus=0))
    assert "gpu_docker_agent_engine_up" in ours and "DCGM_FI_DEV_GPU_UTIL" in ours  # every kind of series seen
    assert sorted(ours & theirs) == []
    assert sorted(n for n in ours if n.startswith("node_")) == []


def test_dcgm_names_units_and_labels(tmp_path: Path) -> None:
    families = _families(tmp_path, gpus=2)
    util = {s.labels["gpu"]: s for s in families["DCGM_FI_DEV_GPU_UTIL"].samples}
    assert {k: s.value for k, s in util.items()} == {"0": 10.0, "1": 20.0}  # percent, as DCGM
    assert util["1"].labels == {"gpu": "1", "UUID": "GPU-SIM-h-1", "device": "nvidia1", "modelName": "A100-80GB",
                                "Hostname": "h1", **dict.fromkeys(TASK_LABELS, "")}
    assert [s.value for s in families["DCGM_FI_DEV_FB_USED"].samples] == [1000, 1000]  # MiB, as DCGM
    assert [s.value for s in families["DCGM_FI_DEV_POWER_USAGE"].samples] == [90, 90]  # W
    assert [s.value for s in families["DCGM_FI_DEV_GPU_TEMP"].samples] == [40, 40]  # C


def _task(name: str, *devices: str, queue: str = "") -> GpuTask:
    return GpuTask("train_dag", name, "manual__1", "-1", queue, devices)


def test_series_per_task_holding_the_gpu(tmp_path: Path) -> None:
    """GPU 0 is shared by two tasks (half each), GPUs 1 and 2 are one task's (by index and by
    UUID), GPU 3 is nobody's."""
    tasks = (_task("a", "0"), _task("b", "0", queue="vision"), _task("c", "1", "GPU-SIM-h-2"))
    families = _families(tmp_path, EngineAnswers(tasks))
    held = sorted((s.labels["gpu"], s.labels["task_id"], s.labels["queue"], s.value)
                  for s in families["DCGM_FI_DEV_GPU_UTIL"].samples)
    assert held == [("0", "a", "", 10.0), ("0", "b", "vision", 10.0), ("1", "c", "", 20.0), ("2", "c", "", 30.0),
                    ("3", "", "", 40.0)]
    every = {s.labels["task_id"] for f in families.values() if f.name.startswith("DCGM_") for s in f.samples}
    assert every == {"a", "b", "c", ""}
    assert families["gpu_docker_agent_engine_up"].samples[0].value == 1


def test_unreadable_engine_serves_gpus_without_task_labels(tmp_path: Path) -> None:
    families = _families(tmp_path, EngineAnswers(None, reason="the Docker engine could not be read"))
    assert families["gpu_docker_agent_engine_up"].samples[0].value == 0
    assert {s.labels["task_id"] for s in families["DCGM_FI_DEV_GPU_UTIL"].samples} == {""}
    assert len(families["DCGM_FI_DEV_GPU_UTIL"].samples) == 4


def test_engine_without_socket_is_logged_once_with_cause_and_fix(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    reader = EngineTasks(f"unix://{tmp_path / 'no-engine.sock'}", timeout=1.0)
    with caplog.at_level(logging.ERROR, logger="provider.agent.tasks"):
        assert reader.read(0.0) is None
        assert reader.read(0.0) is None
    (record,) = caplog.records
    assert "no-engine.sock" in record.getMessage() and "fix --engine" in record.getMessage()
    assert reader.reason is not None and "no-engine.sock" in reader.reason


@pytest.mark.parametrize(
    ("requests", "devices"),
    [
        pytest.param([{"Driver": "nvidia", "DeviceIDs": ["0", "2"], "Capabilities": [["gpu"]]}], ("0", "2"),
                     id="ids-as-the-operator-asks"),
        pytest.param([{"Driver": "", "DeviceIDs": ["GPU-x"], "Capabilities": [["gpu"]]}], ("GPU-x",), id="by-uuid"),
        pytest.param([{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}], ("all",), id="all-gpus"),
        pytest.param([{"Driver": "nvidia", "Count": 2}], ("0", "1"), id="count-takes-the-first"),
        pytest.param([{"Driver": "other", "DeviceIDs": ["0"], "Capabilities": [["fpga"]]}], (), id="not-a-gpu"),
        pytest.param(None, (), id="no-requests"),
    ],
)
def test_requested_devices(requests: list[dict[str, Any]] | None, devices: tuple[str, ...]) -> None:
    assert requested_devices(requests) == devices


def test_task_of_labels() -> None:
    labels = TaskInstanceRef("d", "t", "r", 3, try_number=2).to_labels()
    assert task_of({**labels, GPU_QUEUE_LABEL: "nlp"}, ("1",)) == GpuTask("d", "t", "r", "3", "nlp", ("1",))
    assert task_of(labels, ()) is None  # a CPU-only task holds no GPU
    assert task_of({"com.example": "x"}, ("0",)) is None  # not a task container of the provider
    assert _task("x", "all").holds(7, None) and not _task("x", "1").holds(2, "GPU-2")


def place(owner: str, pool: str, queue: str, lease: str) -> dict[str, Any]:
    """A place in line as the engine lists it (labels as provider/reservations/rules.py writes
    them), created at second 1 of the engine's clock."""
    return {"Id": owner, "State": "created", "Created": 1, "Labels": {
        WAIT_LABEL: "true", OWNER_LABEL: owner, WAIT_POOL_LABEL: pool, WAIT_QUEUE_LABEL: queue,
        WAIT_LEASE_LABEL: lease}}


def test_waiting_tasks_are_counted_by_pool_and_queue_while_their_place_lasts(tmp_path: Path) -> None:
    listed = [
        place("a", "main", "vision", "200"), place("b", "main", "vision", "200"),
        place("a", "main", "vision", "300"),  # one task, two places (one being renewed): counted once
        place("c", "main", "nlp", "200"), place("d", "other", "nlp", "200"),
        place("e", "main", "nlp", "99"),  # lapsed at second 100: its task is gone
        place("f", "main", "nlp", "inf"), place("g", "main", "nlp", "soon"),  # not the provider's
        {"Id": "t", "State": "running", "Labels": {WAIT_POOL_LABEL: "main"}},  # no place in line
    ]
    counted = waiting_in_line(listed, now=100.0)
    assert counted == (QueueWaiting("main", "nlp", 1), QueueWaiting("main", "vision", 2),
                       QueueWaiting("other", "nlp", 1))
    families = _families(tmp_path, EngineAnswers((), waiting=counted))
    shown = {(s.labels["pool"], s.labels["queue"]): s.value for s in families["gpu_docker_tasks_waiting"].samples}
    assert shown == {("main", "nlp"): 1, ("main", "vision"): 2, ("other", "nlp"): 1}
