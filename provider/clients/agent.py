"""Read node agents: their ``/v1/node`` documents, or why a host could not be read.

One coroutine reads one agent; :func:`read_agents` reads many concurrently on one event loop.
What a document means for placement is the reservation layer's business
(:mod:`provider.reservations.measured`); this module only fetches.

The transport is :mod:`provider.clients.http11` over plain ``http`` or ``https``, with the
connection kept alive per event loop (:mod:`provider.clients.connections`): reading a pool of
1000 agents is on the path of every placement, so each request must be cheap.

A host that cannot be read is never dropped: its reading carries ``unreachable``, a sentence
naming the cause, the timeout and the fix, so a no-fit message can list it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from provider.errors import AgentError, ProtocolError
from provider.clients.hosts import HostConfig
from provider.clients.connections import Endpoint, pool, within
from provider.clients.engine_sync import run_sync
from provider.clients.http11 import decode_json
from provider.limits import MAX_CONCURRENT_HOSTS



@dataclass(frozen=True, slots=True)
class AgentReading:
    """What one agent answered: its ``/v1/node`` document, or why there is none.

    ``unmeasured``: the host has no agent to ask (no ``agent_url``); ``unreachable``: it has
    one that could not be read. Either is a sentence naming the cause and the fix.
    """

    doc: Mapping[str, Any] | None = None
    unreachable: str | None = None
    unmeasured: str | None = None


async def read_agents(
    hosts: Sequence[HostConfig], timeout: float, max_concurrency: int = MAX_CONCURRENT_HOSTS
) -> list[AgentReading]:
    """Read every host's agent concurrently, at most ``max_concurrency`` sockets at once, in order."""
    gate = asyncio.Semaphore(max_concurrency)

    async def one(host: HostConfig) -> AgentReading:
        async with gate:
            return await read_agent(host, timeout)

    return list(await asyncio.gather(*(one(h) for h in hosts)))


async def read_agent(host: HostConfig, timeout: float) -> AgentReading:
    """One host's agent document; every failure becomes a reading with its reason."""
    url = host.agent_url
    if not url:
        return AgentReading(unmeasured=(
            f"connection {host.name!r} has no agent_url, so its capacity and GPUs are unknown; run "
            '`python -m provider.agent` on the host and add {"agent_url": "http://HOST:9400"} to the '
            "connection's extra"
        ))
    try:
        return AgentReading(doc=await within(fetch_node(url, host.agent_token, host.agent_ca_cert), timeout))
    except asyncio.TimeoutError:
        return AgentReading(unreachable=(
            f"agent {url} did not answer within {timeout:g} s (timeout={timeout:g} s); check that "
            "`python -m provider.agent` runs there and the port is open, or raise the timeout"
        ))
    except ConnectionRefusedError as exc:
        return AgentReading(unreachable=(
            f"agent {url} refused the connection ({exc.strerror or exc}; timeout={timeout:g} s); "
            f"start `python -m provider.agent` there or fix agent_url of {host.name!r}"
        ))
    except ssl.SSLError as exc:  # before OSError, which it is
        return AgentReading(unreachable=(
            f"agent {url} failed the TLS handshake ({exc}); set agent_ca_cert of {host.name!r} to the CA that "
            "signed the agent's --tls-cert (without it the system's trust store is used), and check that the "
            "certificate names the host as agent_url does"
        ))
    except OSError as exc:
        return AgentReading(
            unreachable=f"cannot reach agent {url} ({exc}; timeout={timeout:g} s); fix agent_url of {host.name!r}")
    except AgentError as exc:
        return AgentReading(unreachable=str(exc))


async def fetch_node(url: str, token: str | None, ca_cert: str | None = None) -> dict[str, Any]:
    """``GET {url}/v1/node`` and decode the JSON; raises AgentError or OSError (``ssl.SSLError``
    when an https agent's certificate is not signed by ``ca_cert``, or by the system's trust
    store when ``ca_cert`` is None).

    The connection is kept alive for the next read (:mod:`provider.clients.connections`).
    """
    endpoint, path, host = _agent_endpoint(url, ca_cert)
    what = f"agent {url}"
    try:
        answer = await (await pool()).request(
            endpoint, "GET", path, host=host, what=what,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        if answer.status == 401:
            raise AgentError(
                f"agent {url} rejected the token (HTTP 401); set the host connection's password to "
                "the token in the agent's --token-file"
            )
        if answer.status != 200:
            raise AgentError(f"agent {url} answered HTTP {answer.status}: {answer.body[:200].decode('utf-8', 'replace')}")
        doc = decode_json(answer.body, what)
    except ProtocolError as exc:
        raise AgentError(f"{exc}; is agent_url pointing at the agent?") from exc
    if not isinstance(doc, dict):
        raise AgentError(f"agent {url} sent JSON that is not an object; is agent_url pointing at the agent?")
    return doc


@functools.lru_cache(maxsize=4096)
def _agent_endpoint(url: str, ca_cert: str | None) -> tuple[Endpoint, str, str]:
    """Where ``url``'s agent answers: the endpoint, the document's path and the Host field."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentError(f"agent_url {url!r} must look like http://HOST:PORT or https://HOST:PORT")
    tls = parts.scheme == "https"
    endpoint = Endpoint(parts.hostname, parts.port or (443 if tls else 80), _tls_context(ca_cert) if tls else None)
    return endpoint, f"{parts.path.rstrip('/')}/v1/node", parts.netloc


@functools.lru_cache(maxsize=64)
def _tls_context(ca_cert: str | None) -> ssl.SSLContext:
    """Verifies the agent with ``ca_cert`` only (None: the system's trust store), checking that
    its certificate names the host of agent_url. Built once per CA: loading a store reads files
    (milliseconds), which a poll inside the triggerer's event loop must not repeat."""
    try:
        return ssl.create_default_context(cafile=ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise AgentError(
            f"cannot load agent_ca_cert {ca_cert!r} ({exc}); give the path of the PEM file of the CA that "
            "signed the agent's certificate, readable on this worker"
        ) from exc


SAMPLE_TIMEOUT_S = 1.0
"""A GPU sample is taken while the log pipeline waits: it must never hold it up for long."""


def gpu_sample(host: HostConfig, gpu_ids: Sequence[int], timeout: float = SAMPLE_TIMEOUT_S) -> dict[str, Any] | None:
    """Utilisation and memory of ``gpu_ids`` on ``host`` now, from its agent; None if unreadable.

    Called from a worker thread once per archive chunk, for the manifest's ``gpu_samples``; the
    read runs on the process's I/O loop, so the connection to the agent is kept between samples.
    """
    if not host.agent_url:
        return None
    try:
        doc = run_sync(asyncio.wait_for(fetch_node(host.agent_url, host.agent_token, host.agent_ca_cert), timeout))
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
