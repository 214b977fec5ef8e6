"""Mapping an agent's ``/v1/node`` document to the placement model, and the pool connection type."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest

from provider.reservations.measured import node_state, unreachable
from provider.clients.hosts import HostConfig
from provider import get_provider_info
from provider.hooks.docker_host import GpuDockerHook
from provider.hooks.node_metrics import NodeMetricsHook
from provider.scheduling.model import GpuState, NodeState

MIB = 1024 * 1024
HOST = HostConfig(name="gpu_a", docker_url="unix:///run/gpu-a.sock", agent_url="http://a:9400", labels=MappingProxyType({"zone": "a"}))


def _gpu(index: int, **over: Any) -> dict[str, Any]:
    gpu = {
        "index": index,
        "uuid": f"GPU-{index}",
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total_mib": 81920,
        "memory_used_mib": 1000,
        "utilization_pct": 12.0,
        "temperature_c": 40.0,
        "power_w": 90.5,
        "processes": [{"pid": 1, "used_memory_mib": 1000}],
    }
    gpu.update(over)
    return gpu


def _doc(gpus: list[dict[str, Any]], **cpu: Any) -> dict[str, Any]:
    return {
        "schema": 1,
        "host": "a",
        "sampled_at": "2025-01-01T00:00:00Z",
        "cpu": {"count": 8, "utilization_pct": 37.5, "per_cpu": [], "load_avg": {"1m": 1, "5m": 1, "15m": 1}, **cpu},
        "memory": {"total_bytes": 64 * 1024 * MIB, "available_bytes": 48 * 1024 * MIB},
        "disk": {"path": "/var/lib/docker", "requested_path": "/var/lib/docker", "total_bytes": 1, "free_bytes": 1},
        "gpu_backend": "nvml",
        "gpu_reason": None if gpus else "NVML library not found",
        "gpus": gpus,
    }


A100 = GpuState(index=0, model="NVIDIA A100-SXM4-80GB", uuid="GPU-0", memory_total_mb=81920, memory_used_mb=1000, utilization_pct=12.0)


def _node(gpus: tuple[GpuState, ...], **over: Any) -> NodeState:
    """The state ``_doc`` maps to, with ``over`` replacing fields."""
    fields: dict[str, Any] = {
        "name": "gpu_a",
        "cpu_milli": 8000,
        "memory_mb": 65536,
        "memory_available_mb": 49152,
        "cpu_utilization_pct": 37.5,
        "measured_at": 1735689600.0,  # the document's sampled_at, 2025-01-01T00:00:00Z
        "labels": HOST.labels,
        "gpus": gpus,
    }
    return NodeState(**{**fields, **over})


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(
            _doc([_gpu(0), _gpu(1, uuid="GPU-1", utilization_pct=99.0)]),
            _node((A100, GpuState(1, A100.model, "GPU-1", 81920, 1000, 99.0))),
            id="two-gpus",
        ),
        pytest.param(
            _doc([], count=2, utilization_pct=0.0), _node((), cpu_milli=2000, cpu_utilization_pct=0.0), id="no-gpu"
        ),
        pytest.param(
            _doc([], count=2, capacity_milli=500, cgroup="/h1", utilization_pct=80.0),
            _node((), cpu_milli=500, cpu_utilization_pct=80.0), id="cgroup-quota-is-the-capacity",
        ),
        pytest.param(
            _doc([_gpu(0, memory_used_mib=None, utilization_pct=None, name=None, uuid=None)]),
            _node((GpuState(index=0, memory_total_mb=81920),)),
            id="unsupported-fields-claim-nothing",
        ),
        pytest.param(
            _doc([_gpu(0, memory_total_mib=None, memory_used_mib=None)]),
            _node((GpuState(0, A100.model, "GPU-0", 0, 0, 12.0),)),
            id="unknown-memory-offers-none",
        ),
    ],
)
def test_node_state(doc: dict[str, Any], expected: NodeState) -> None:
    before = copy.deepcopy(doc)
    state = node_state(HOST, doc)
    assert state == expected
    assert state.unreachable is None
    assert all(g.allocated_milli == 0 for g in state.gpus) and state.cpu_allocated_milli == 0
    assert doc == before


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        pytest.param({**_doc([]), "schema": 2}, ValueError, id="other-schema"),
        pytest.param({k: v for k, v in _doc([]).items() if k != "memory"}, KeyError, id="no-memory"),
        pytest.param(_doc([{"uuid": "x"}]), KeyError, id="gpu-without-index"),
        pytest.param(_doc([], count="many"), ValueError, id="cpu-count-not-int"),
        pytest.param({**_doc([]), "gpus": None}, TypeError, id="gpus-null"),
    ],
)
def test_node_state_rejects(doc: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        node_state(HOST, doc)


def test_unreachable_keeps_name_and_labels() -> None:
    assert unreachable(HOST, "down") == NodeState(name="gpu_a", labels=HOST.labels, unreachable="down")


@pytest.mark.parametrize("hook", [NodeMetricsHook, GpuDockerHook], ids=["pool", "host"])
def test_connection_types_match_their_hooks(hook: type[Any]) -> None:
    [entry] = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == hook.conn_type]
    module, _, name = entry["hook-class-name"].rpartition(".")
    assert (module, name) == (hook.__module__, hook.__name__)
    assert entry["hook-name"] == hook.hook_name


def test_pool_hook_takes_its_connection_attribute() -> None:
    assert NodeMetricsHook.conn_type == "gpu_docker_pool" == NodeMetricsHook.conn_type == "gpu_docker_pool"
    assert NodeMetricsHook.conn_name_attr in NodeMetricsHook.__init__.__code__.co_varnames


def test_hook_connects_to_nothing_in_init() -> None:
    hook = NodeMetricsHook(pool="no_such_connection", timeout=0.5)
    assert "hosts" not in hook.__dict__ and hook.pool == "no_such_connection"
