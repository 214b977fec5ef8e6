"""Read node agents and map their documents to :class:`NodeState`.

One coroutine reads one agent; :func:`read_agents` reads many concurrently on one event loop.
The synchronous hook runs it with ``asyncio.run`` and a trigger awaits it, so both share the
transport and the mapping.

The transport is :mod:`provider.hooks.http10` over plain ``http`` or ``https``: reading a
pool of 1000 agents is on the path of every placement, so each request must be cheap.

A host that cannot be read is never dropped: it comes back as a ``NodeState`` with
``unreachable`` set to a sentence naming the cause, the timeout and the fix, so a no-fit
message can list it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from provider.errors import AgentError, ProtocolError
from provider.hooks.hosts import HostConfig
from provider.hooks.http10 import decode_json, exchange
from provider.scheduling.model import GpuState, NodeState

MIB = 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 256
AGENT_SCHEMA = 1


def node_state(host: HostConfig, doc: Mapping[str, Any]) -> NodeState:
    """Map one ``/v1/node`` document (docs/agent.md) to the placement model.

    Capacity comes from the CPUs the agent reports (``--cpus``), at 1000 milli-CPUs each.
    A GPU field the device could not report maps to the value that claims nothing: no
    memory in use, no utilisation, and no memory at all when the total is unknown.
    Reservations are not the agent's business, so every ``allocated`` field stays 0.
    """
    if doc.get("schema") != AGENT_SCHEMA:
        raise ValueError(f"schema {doc.get('schema')!r}, this provider reads schema {AGENT_SCHEMA}")
    cpu, memory = doc["cpu"], doc["memory"]
    return NodeState(
        name=host.name,
        cpu_milli=int(cpu["count"]) * 1000,
        memory_mb=int(memory["total_bytes"]) // MIB,
        memory_available_mb=int(memory["available_bytes"]) // MIB,
        cpu_utilization_pct=float(cpu["utilization_pct"]),
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


async def read_agents(
    hosts: Sequence[HostConfig], timeout: float, max_concurrency: int = DEFAULT_MAX_CONCURRENCY
) -> list[NodeState]:
    """Read every host concurrently, at most ``max_concurrency`` sockets at once, in order."""
    gate = asyncio.Semaphore(max_concurrency)

    async def one(host: HostConfig) -> NodeState:
        async with gate:
            return await read_host(host, timeout)

    return list(await asyncio.gather(*(one(h) for h in hosts)))


async def read_host(host: HostConfig, timeout: float) -> NodeState:
    """One host's state; every failure becomes ``unreachable`` with its reason."""
    url = host.agent_url
    if not url:
        return NodeState(
            name=host.name,
            labels=host.labels,
            unmeasured=(
                f"connection {host.name!r} has no agent_url, so its capacity and GPUs are unknown; run "
                '`python -m provider.agent` on the host and add {"agent_url": "http://HOST:9400"} to the '
                "connection's extra"
            ),
        )
    try:
        doc = await asyncio.wait_for(fetch_node(url, host.agent_token), timeout)
    except asyncio.TimeoutError:
        return unreachable(
            host,
            f"agent {url} did not answer within {timeout:g} s (timeout={timeout:g} s); check that "
            "`python -m provider.agent` runs there and the port is open, or raise the timeout",
        )
    except ConnectionRefusedError as exc:
        return unreachable(
            host,
            f"agent {url} refused the connection ({exc.strerror or exc}; timeout={timeout:g} s); "
            f"start `python -m provider.agent` there or fix agent_url of {host.name!r}",
        )
    except OSError as exc:
        return unreachable(host, f"cannot reach agent {url} ({exc}; timeout={timeout:g} s); fix agent_url of {host.name!r}")
    except AgentError as exc:
        return unreachable(host, str(exc))
    try:
        return node_state(host, doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return unreachable(
            host, f"agent {url} sent an unexpected document ({exc!r}); run the agent of this provider's version"
        )


async def fetch_node(url: str, token: str | None) -> dict[str, Any]:
    """``GET {url}/v1/node`` and decode the JSON; raises AgentError or OSError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentError(f"agent_url {url!r} must look like http://HOST:PORT")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=_tls_context() if tls else None)
    what = f"agent {url}"
    try:
        status, body = await exchange(
            reader, writer, "GET", f"{parts.path.rstrip('/')}/v1/node", host=parts.netloc,
            headers={"Authorization": f"Bearer {token}"} if token else None, what=what,
        )
        if status == 401:
            raise AgentError(
                f"agent {url} rejected the token (HTTP 401); set the host connection's password to "
                "the token in the agent's --token-file"
            )
        if status != 200:
            raise AgentError(f"agent {url} answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        doc = decode_json(body, what)
    except ProtocolError as exc:
        raise AgentError(f"{exc}; is agent_url pointing at the agent?") from exc
    if not isinstance(doc, dict):
        raise AgentError(f"agent {url} sent JSON that is not an object; is agent_url pointing at the agent?")
    return doc


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Built once: creating a default context loads the CA store (milliseconds)."""
    return ssl.create_default_context()


SAMPLE_TIMEOUT_S = 1.0
"""A GPU sample is taken while the log pipeline waits: it must never hold it up for long."""


def gpu_sample(host: HostConfig, gpu_ids: Sequence[int], timeout: float = SAMPLE_TIMEOUT_S) -> dict[str, Any] | None:
    """Utilisation and memory of ``gpu_ids`` on ``host`` now, from its agent; None if unreadable.

    Called from a worker thread once per archive chunk, for the manifest's ``gpu_samples``.
    """
    if not host.agent_url:
        return None
    try:
        doc = asyncio.run(asyncio.wait_for(fetch_node(host.agent_url, host.agent_token), timeout))
    except (OSError, AgentError, asyncio.TimeoutError):
        return None
    wanted = set(gpu_ids)
    return {
        "t": doc.get("sampled_at"),
        "gpus": [
            {"index": g["index"], "utilization_pct": g.get("utilization_pct"), "memory_used_mib": g.get("memory_used_mib")}
            for g in doc.get("gpus", []) if g.get("index") in wanted
        ],
    }
