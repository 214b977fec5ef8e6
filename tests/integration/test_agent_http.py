"""Real agents on loopback: authentication, JSON and Prometheus endpoints, the no-GPU path on a
machine without NVIDIA driver, and the pool hook reading several agents plus dead ports."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from provider.clients.hosts import HostConfig
from provider.hooks.node_metrics import NodeMetricsHook
from provider.reservations.view import PoolView
from provider.scheduling.model import NodeState
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningAgent]]:
    """a: 4 GPUs of 80 GB, b: 2 of 16 GB, c: none (simulated); nvml: the real NVML backend."""
    workdir = tmp_path_factory.mktemp("agents")
    started: dict[str, RunningAgent] = {}
    try:
        for name, inventory in (
            ("a", gpus(4, "A100-80GB", 81920)),
            ("b", gpus(2, "T4", 16384, util=50.0)),
            ("c", []),
            ("nvml", None),
        ):
            started[name] = start_agent(workdir, name, inventory, TOKEN)
        yield started
    finally:
        for agent in started.values():
            stop_agent(agent.process)


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measured(view: PoolView) -> list[NodeState]:
    """What the agents reported, host by host (the engines at these URLs do not exist)."""
    return [h.measured for h in view.hosts]


NO_ENGINE = "tcp://127.0.0.1:2376"
"""No engine listens there: these tests read agents only. ``insecure=True`` lets the URL pass the
rule that a tcp:// engine needs TLS files; nothing is ever sent to it in clear."""


def _host(agent: RunningAgent, token: str | None = TOKEN) -> HostConfig:
    return HostConfig(name=f"gpu_{agent.name}", docker_url=NO_ENGINE, agent_url=agent.url, agent_token=token,
                      insecure=True)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        pytest.param("/v1/node", {}, 401, id="node-no-token"),
        pytest.param("/v1/node", {"Authorization": "Bearer wrong"}, 401, id="node-wrong-token"),
        pytest.param("/v1/node", {"Authorization": TOKEN}, 401, id="node-no-scheme"),
        pytest.param("/metrics", {}, 401, id="metrics-no-token"),
        pytest.param("/v1/node", AUTH, 200, id="node-token"),
        pytest.param("/metrics", AUTH, 200, id="metrics-token"),
        pytest.param("/healthz", {}, 200, id="healthz-open"),
        pytest.param("/nope", AUTH, 404, id="unknown-path"),
    ],
)
def test_auth(agents: dict[str, RunningAgent], path: str, headers: dict[str, str], status: int) -> None:
    response = httpx.get(agents["a"].url + path, headers=headers, timeout=5)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"] == "missing or wrong bearer token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_node_document(agents: dict[str, RunningAgent]) -> None:
    doc = httpx.get(agents["b"].url + "/v1/node", headers=AUTH, timeout=5).json()
    assert doc["host"] == "b" and doc["gpu_backend"] == "simulated"
    assert [(g["index"], g["name"], g["memory_total_mib"], g["utilization_pct"]) for g in doc["gpus"]] == [
        (0, "T4", 16384, 50.0),
        (1, "T4", 16384, 50.0),
    ]
    assert doc["disk"]["path"] == "/"


def test_every_answer_keeps_the_connection_alive(agents: dict[str, RunningAgent]) -> None:
    """One connection carries every endpoint's answers, each with its Content-Length, and the
    node document as the provider's reader gets it over its kept connection."""
    from provider.clients.agent import fetch_node
    from provider.clients.engine_sync import run_sync

    with httpx.Client(timeout=5) as client:
        for path, headers in (("/v1/node", AUTH), ("/metrics", AUTH), ("/healthz", {}), ("/nope", AUTH),
                              ("/v1/node", {})):
            response = client.get(agents["a"].url + path, headers=headers)
            assert response.http_version == "HTTP/1.1" and "content-length" in response.headers
            assert response.headers.get("connection", "") != "close"
        assert len(client._transport._pool.connections) == 1  # type: ignore[attr-defined]
    docs = [run_sync(fetch_node(agents["a"].url, TOKEN)) for _ in range(3)]
    assert {d["host"] for d in docs} == {"a"}


def test_metrics_parse(agents: dict[str, RunningAgent]) -> None:
    text = httpx.get(agents["a"].url + "/metrics", headers=AUTH, timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    util = families["DCGM_FI_DEV_GPU_UTIL"].samples
    assert sorted(s.labels["gpu"] for s in util) == ["0", "1", "2", "3"]
    assert {s.value for s in util} == {10.0}
    assert {s.value for s in families["DCGM_FI_DEV_FB_TOTAL"].samples} == {81920}
    assert families["gpu_docker_node_cpu_count"].samples[0].value >= 1


def test_no_gpu_through_nvml(agents: dict[str, RunningAgent]) -> None:
    """This machine has no NVIDIA driver: the real NVML backend reports none, with a reason."""
    doc = httpx.get(agents["nvml"].url + "/v1/node", headers=AUTH, timeout=5).json()
    assert doc["gpu_backend"] == "nvml"
    assert doc["gpus"] == []
    assert "NVML" in doc["gpu_reason"]
    assert doc["memory"]["total_bytes"] > 0


def test_snapshot_three_agents_and_a_dead_port(agents: dict[str, RunningAgent]) -> None:
    dead = HostConfig(name="gpu_dead", docker_url=NO_ENGINE, agent_url=f"http://127.0.0.1:{_free_port()}", insecure=True)
    hook = NodeMetricsHook(hosts=[_host(agents["a"]), _host(agents["b"]), dead, _host(agents["c"])], timeout=1.5)
    started = time.monotonic()
    nodes = measured(hook.snapshot())
    elapsed = time.monotonic() - started
    assert [n.name for n in nodes] == ["gpu_a", "gpu_b", "gpu_dead", "gpu_c"]
    a, b, down, c = nodes
    assert a.unreachable is None and [(g.model, g.memory_total_mb) for g in a.gpus] == [("A100-80GB", 81920)] * 4
    assert b.unreachable is None and [(g.model, g.memory_total_mb) for g in b.gpus] == [("T4", 16384)] * 2
    assert c.unreachable is None and c.gpus == () and c.cpu_milli >= 1000 and c.memory_mb > 0
    assert down.unreachable is not None
    assert "refused" in down.unreachable and "timeout=1.5 s" in down.unreachable
    assert elapsed < hook.timeout + 1.0, f"snapshot took {elapsed:.2f} s with timeout {hook.timeout} s"


def test_silent_agent_times_out(agents: dict[str, RunningAgent]) -> None:
    """A port that accepts connections but never answers is reported, not waited for."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        hook = NodeMetricsHook(
            hosts=[HostConfig("gpu_silent", NO_ENGINE, agent_url=f"http://127.0.0.1:{port}", insecure=True), _host(agents["c"])],
            timeout=0.5,
        )
        started = time.monotonic()
        silent_node, c = measured(hook.snapshot())
        elapsed = time.monotonic() - started
    assert silent_node.unreachable is not None and "did not answer within 0.5 s" in silent_node.unreachable
    assert c.unreachable is None
    assert elapsed < 0.5 + 1.0, f"snapshot took {elapsed:.2f} s with timeout 0.5 s"


@pytest.mark.parametrize(
    ("token", "reason"),
    [pytest.param("wrong", "rejected the token (HTTP 401)", id="wrong-token"), pytest.param(None, "HTTP 401", id="no-token")],
)
def test_snapshot_reports_rejected_token(agents: dict[str, RunningAgent], token: str | None, reason: str) -> None:
    (node,) = measured(NodeMetricsHook(hosts=[_host(agents["a"], token)], timeout=2).snapshot())
    assert node.unreachable is not None and reason in node.unreachable


def test_snapshot_reports_a_server_that_is_not_an_agent(agents: dict[str, RunningAgent]) -> None:
    wrong_path = HostConfig("gpu_x", NO_ENGINE, agent_url=agents["a"].url + "/healthz", agent_token=TOKEN, insecure=True)
    (node,) = measured(NodeMetricsHook(hosts=[wrong_path], timeout=2).snapshot())
    assert node.unreachable is not None and "HTTP 404" in node.unreachable


def test_asnapshot_matches_snapshot(agents: dict[str, RunningAgent]) -> None:
    hook = NodeMetricsHook(hosts=[_host(agents["a"]), _host(agents["c"])], timeout=2)
    sync_nodes = measured(hook.snapshot())
    async_nodes = measured(asyncio.run(hook.asnapshot()))
    assert [(n.name, len(n.gpus), n.cpu_milli, n.unreachable) for n in async_nodes] == [
        (n.name, len(n.gpus), n.cpu_milli, n.unreachable) for n in sync_nodes
    ]
    ok, message = hook.test_connection()  # the agents answer; the engines at these URLs do not
    assert not ok and "gpu_a: Docker engine of host 'gpu_a' at tcp://127.0.0.1:2376 did not answer" in message


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, "short", [])
    try:
        assert httpx.get(agent.url + "/healthz", timeout=5).json()["status"] == "ok"
        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(10) == 0
    finally:
        stop_agent(agent.process)


def test_snapshot_resolves_pool_connections(agents: dict[str, RunningAgent], monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool connection and its host connections from AIRFLOW_CONN_* variables."""
    monkeypatch.setenv("AIRFLOW_CONN_GPU_POOL", json.dumps({"conn_type": "gpu_docker_pool", "extra": {"hosts": ["gpu_a", "gpu_c"]}}))
    for name, labels in (("a", {"zone": "a"}), ("c", {})):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_GPU_{name.upper()}",
            json.dumps({"conn_type": "gpu_docker_host", "host": NO_ENGINE, "password": TOKEN,
                        "extra": {"agent_url": agents[name].url, "labels": labels, "insecure": True}}),
        )
    nodes = measured(NodeMetricsHook(pool="gpu_pool", timeout=2).snapshot())
    assert [(n.name, dict(n.labels), len(n.gpus), n.unreachable) for n in nodes] == [
        ("gpu_a", {"zone": "a"}, 4, None),
        ("gpu_c", {}, 0, None),
    ]
