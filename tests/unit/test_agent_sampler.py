"""The node sample: CPU arithmetic, disk path choice, the JSON document and its Prometheus view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from provider.agent.metrics import make_registry
from provider.agent.sampler import Sampler, busy_pct, docker_disk_path
from provider.agent.simulated import SimulatedBackend, parse_inventory
from tests.conftest import eventually

# Linux cpu_times order: user nice system idle iowait irq softirq steal guest guest_nice
TOTAL = (0, 1, 2, 3, 4, 5, 6, 7)
IDLE = (3, 4)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param((0,) * 10, (50, 0, 0, 50, 0, 0, 0, 0, 0, 0), 50.0, id="half-busy"),
        pytest.param((0,) * 10, (0, 0, 0, 80, 20, 0, 0, 0, 0, 0), 0.0, id="iowait-is-idle"),
        pytest.param((0,) * 10, (30, 0, 0, 70, 0, 0, 0, 0, 30, 0), 30.0, id="guest-not-counted-twice"),
        pytest.param((5,) * 10, (5,) * 10, 0.0, id="no-time-passed"),
        pytest.param((0,) * 10, (10, 0, 10, 0, 0, 0, 0, 0, 0, 0), 100.0, id="fully-busy"),
    ],
)
def test_busy_pct(before: tuple[float, ...], after: tuple[float, ...], expected: float) -> None:
    assert busy_pct(before, after, TOTAL, IDLE) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("exists", "expected"),
    [pytest.param(True, "requested", id="docker-root-exists"), pytest.param(False, "/", id="fallback-to-root")],
)
def test_docker_disk_path(tmp_path: Path, exists: bool, expected: str) -> None:
    requested = tmp_path / "docker"
    if exists:
        requested.mkdir()
    assert docker_disk_path(str(requested)) == (str(requested) if expected == "requested" else "/")


def _sampler(tmp_path: Path, cpus: list[int] | None = None) -> Sampler:
    inventory = [
        {"model": "A100-80GB", "memory_total_mb": 81920, "memory_reserved_mb": 512, "temperature_c": 55,
         "timeline": [[0, 25, 4096]]}
    ]
    backend = SimulatedBackend(parse_inventory(inventory), lambda: 0.0, uuid_prefix="t")
    return Sampler("node-t", backend, cpus=cpus, docker_root=str(tmp_path / "absent"), interval_s=0.05)


def test_sample_document(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path, cpus=[0])
    sampler.refresh()
    latest = sampler.latest()
    assert latest is not None
    doc = json.loads(latest[1])
    assert doc["schema"] == 1 and doc["host"] == "node-t" and doc["sampled_at"].endswith("Z")
    assert doc["cpu"]["count"] == 1 and [c["cpu"] for c in doc["cpu"]["per_cpu"]] == [0]
    assert 0.0 <= doc["cpu"]["utilization_pct"] <= 100.0
    assert set(doc["cpu"]["load_avg"]) == {"1m", "5m", "15m"}
    assert 0 < doc["memory"]["available_bytes"] <= doc["memory"]["total_bytes"]
    assert doc["disk"]["path"] == "/" and doc["disk"]["requested_path"].endswith("absent")
    assert doc["gpu_backend"] == "simulated" and doc["gpu_reason"] is None
    assert doc["gpus"] == [
        {
            "index": 0,
            "uuid": "GPU-SIM-t-0",
            "name": "A100-80GB",
            "memory_total_mib": 81920,
            "memory_used_mib": 4096,
            "memory_reserved_mib": 512,
            "memory_free_mib": 81920 - 512 - 4096,
            "utilization_pct": 25.0,
            "temperature_c": 55,
            "power_w": None,
            "processes": [],
        }
    ]


def test_unknown_cpu_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not exist"):
        _sampler(tmp_path, cpus=[0, 4096])


def test_thread_keeps_sampling(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path)
    sampler.start()
    try:
        first = sampler.latest()
        assert first is not None
        eventually(sampler.latest, 5, interval_s=0.05, what="a second sample taken by the sampler thread",
                   until=lambda latest: latest is not None and latest[2] > first[2])
    finally:
        sampler.stop()


def test_metrics_exposition(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path)
    registry = make_registry(sampler)
    assert generate_latest(registry) == b""
    sampler.refresh()
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    gpu = {"gpu": "0", "UUID": "GPU-SIM-t-0", "device": "nvidia0", "modelName": "A100-80GB", "Hostname": "node-t",
           "dag_id": "", "task_id": "", "run_id": "", "map_index": "", "queue": ""}
    assert [(s.labels, s.value) for s in families["DCGM_FI_DEV_GPU_UTIL"].samples] == [(gpu, 25.0)]
    assert families["DCGM_FI_DEV_FB_USED"].samples[0].value == 4096
    assert families["DCGM_FI_DEV_FB_RESERVED"].samples[0].value == 512
    assert families["DCGM_FI_DEV_FB_TOTAL"].samples[0].value == 81920
    assert families["DCGM_FI_DEV_FB_FREE"].samples[0].value == 81920 - 512 - 4096
    assert families["DCGM_FI_DEV_GPU_TEMP"].samples[0].value == 55
    assert families["DCGM_FI_DEV_POWER_USAGE"].samples == []
    assert families["gpu_docker_node_memory_available_bytes"].samples[0].value > 0
    assert families["gpu_docker_node_docker_root_free_bytes"].samples[0].labels == {"path": "/"}
    assert families["gpu_docker_agent_info"].samples[0].labels == {"host": "node-t", "gpu_backend": "simulated"}
    assert "gpu_docker_agent_engine_up" not in families  # no --engine
