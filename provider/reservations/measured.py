"""What a host's node agent measured, as the placement model reads it.

:func:`measure` reads every agent of a pool through :mod:`provider.clients.agent` and maps each
``/v1/node`` document (``docs/agent.md``) to a :class:`~provider.scheduling.model.NodeState`
with nothing reserved yet: reservations are the engines' business
(:mod:`provider.reservations.pool` folds them in). A host that could not be read, or sent a
document this provider does not understand, keeps its place as *unreachable* with the reason;
a host without an agent is *unmeasured*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from provider.clients.agent import AgentReading, read_agents
from provider.clients.hosts import HostConfig
from provider.limits import MAX_CONCURRENT_HOSTS
from provider.scheduling.model import GpuState, NodeState

MIB = 1024 * 1024
AGENT_SCHEMA = 1
"""The ``schema`` of the ``/v1/node`` documents this provider reads."""


async def measure(hosts: Sequence[HostConfig], timeout: float,
                  max_concurrency: int = MAX_CONCURRENT_HOSTS) -> list[NodeState]:
    """Every host as its agent measured it, in the order of ``hosts``."""
    readings = await read_agents(hosts, timeout, max_concurrency)
    return [measured_node(h, r) for h, r in zip(hosts, readings)]


def measured_node(host: HostConfig, reading: AgentReading) -> NodeState:
    """One host's reading as a node: measured, unmeasured (no agent) or unreachable."""
    if reading.unmeasured is not None:
        return NodeState(name=host.name, labels=host.labels, unmeasured=reading.unmeasured)
    if reading.doc is None:
        return unreachable(host, reading.unreachable or "its agent sent nothing")
    try:
        return node_state(host, reading.doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return unreachable(
            host, f"agent {host.agent_url} sent an unexpected document ({exc!r}); run the agent of this "
            "provider's version"
        )


def node_state(host: HostConfig, doc: Mapping[str, Any]) -> NodeState:
    """Map one ``/v1/node`` document (docs/agent.md) to the placement model.

    CPU capacity is the agent's ``capacity_milli``: its cgroup's quota (``--cgroup``) or 1000
    milli-CPUs per CPU it reports (``--cpus``), which is all an agent before that field says.
    A GPU field the device could not report maps to the value that claims nothing: no
    memory in use, no utilisation, and no memory at all when the total is unknown.
    Reservations are not the agent's business, so every ``allocated`` field stays 0.
    """
    if doc.get("schema") != AGENT_SCHEMA:
        raise ValueError(f"schema {doc.get('schema')!r}, this provider reads schema {AGENT_SCHEMA}")
    cpu, memory = doc["cpu"], doc["memory"]
    return NodeState(
        name=host.name,
        cpu_milli=int(cpu.get("capacity_milli") or int(cpu["count"]) * 1000),
        memory_mb=int(memory["total_bytes"]) // MIB,
        memory_available_mb=int(memory["available_bytes"]) // MIB,
        cpu_utilization_pct=float(cpu["utilization_pct"]),
        measured_at=_epoch(doc.get("sampled_at")),
        labels=host.labels,
        gpus=tuple(
            GpuState(
                index=int(g["index"]),
                model=g.get("name") or "",
                uuid=g.get("uuid") or "",
                memory_total_mb=int(g.get("memory_total_mib") or 0),
                memory_used_mb=_memory_taken_mib(g),
                utilization_pct=float(g.get("utilization_pct") or 0.0),
            )
            for g in doc["gpus"]
        ),
    )


def _epoch(stamp: object) -> float | None:
    """An agent's ``sampled_at`` (ISO 8601, UTC) in seconds since the epoch; None if absent."""
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _memory_taken_mib(gpu: Mapping[str, Any]) -> int:
    """Memory a task cannot have: used by processes plus what the driver reserves.

    The agent reports ``memory_used_mib`` as nvidia-smi does (without the driver's reserved
    memory), so placement counts from the free figure where the agent sends one.
    """
    total, free = gpu.get("memory_total_mib"), gpu.get("memory_free_mib")
    if total is not None and free is not None:
        return max(0, int(total) - int(free))
    return int(gpu.get("memory_used_mib") or 0) + int(gpu.get("memory_reserved_mib") or 0)


def unreachable(host: HostConfig, reason: str) -> NodeState:
    """A host that keeps its place in the snapshot but offers nothing."""
    return NodeState(name=host.name, labels=host.labels, unreachable=reason)

