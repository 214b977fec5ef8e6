"""The few Docker Engine API calls placement makes on every decision, without blocking a loop.

Reading a pool's claims and holds runs on every placement and, for a waiting task, on every
poll of its trigger inside the triggerer's shared event loop, where a blocking client would
stall every other trigger. So these calls go over :mod:`provider.hooks.http10` on asyncio
streams: ``unix://`` sockets and ``tcp://`` (with the connection's TLS files). Everything else
the operator does with an engine stays with :class:`~provider.hooks.docker_host.GpuDockerHook`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from provider.errors import EngineError, ProtocolError
from provider.hooks.hosts import HostConfig, tls_failure_fix
from provider.hooks.http10 import decode_json, exchange


async def call(host: HostConfig, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One API call; returns ``(status, decoded JSON or None)``."""
    what = f"Docker engine at {host.docker_url}"
    try:
        reader, writer = await asyncio.wait_for(_connect(host), timeout)
        status, content = await asyncio.wait_for(
            exchange(reader, writer, method, path, host="docker", body=body, what=what), timeout
        )
    except asyncio.TimeoutError:
        raise EngineError(f"{what} did not answer within {timeout:g} s; check that dockerd runs there") from None
    except ssl.SSLError as exc:
        raise EngineError(f"{what} refused the TLS connection ({exc}). {tls_failure_fix(host)}") from exc
    except (OSError, ProtocolError) as exc:
        raise EngineError(f"{what} did not answer ({exc}); start dockerd there or fix connection {host.name!r}") from exc
    return status, (decode_json(content, what) if content.strip() else None)


async def containers(host: HostConfig, labels: Sequence[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every container (running or not) carrying all ``labels`` (``key`` or ``key=value``)."""
    filters = quote(json.dumps({"label": list(labels)}))
    status, doc = await call(host, "GET", f"/containers/json?all=1&filters={filters}", timeout=timeout)
    if status != 200 or not isinstance(doc, list):
        raise EngineError(f"Docker engine at {host.docker_url} answered HTTP {status} to a container list: {doc!r}")
    return doc


async def create_idle(
    host: HostConfig, name: str, image: str, labels: Mapping[str, str], timeout: float = 10.0
) -> str | None:
    """Create, never start, a container by name; None when the name is already taken.

    Such a container holds state on the host at no cost (docs/reservations.md). It needs an
    image only to exist: when ``image`` is not on the host, any image there will do.
    """
    body = {"Image": image, "Cmd": ["true"], "Labels": dict(labels), "NetworkDisabled": True,
            "HostConfig": {"NetworkMode": "none"}}
    status, doc = await call(host, "POST", f"/containers/create?name={quote(name)}", body, timeout)
    if status == 404:
        _, images = await call(host, "GET", "/images/json", timeout=timeout)
        if not images:
            raise EngineError(f"Docker engine at {host.docker_url} has no image at all to create {name} from")
        status, doc = await call(host, "POST", f"/containers/create?name={quote(name)}",
                                 {**body, "Image": images[0]["Id"]}, timeout)
    if status == 409:
        return None
    if status != 201 or not isinstance(doc, dict):
        raise EngineError(f"Docker engine at {host.docker_url} refused to create {name}: HTTP {status} {doc!r}")
    return str(doc["Id"])


async def remove(host: HostConfig, container_id: str, timeout: float = 10.0) -> None:
    """Remove a container; one that is already gone is fine."""
    status, doc = await call(host, "DELETE", f"/containers/{quote(container_id)}?force=1&v=1", timeout=timeout)
    if status not in (204, 404):
        raise EngineError(f"Docker engine at {host.docker_url} refused to remove {container_id[:12]}: "
                          f"HTTP {status} {doc!r}")


async def _connect(host: HostConfig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(host.docker_url)
    if parts.scheme == "unix":
        return await asyncio.open_unix_connection(parts.path)
    if parts.scheme == "tcp" and parts.hostname:
        return await asyncio.open_connection(parts.hostname, parts.port or 2375, ssl=_tls(host))
    raise EngineError(
        f"{host.docker_url}: placement reads engines over unix:// or tcp:// (with TLS files); "
        f"change the Docker URL of connection {host.name!r}"
    )


def _tls(host: HostConfig) -> ssl.SSLContext | None:
    t = host.tls
    if t is None:
        return None
    ctx = ssl.create_default_context(cafile=t.ca_cert)
    if not t.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if t.client_cert and t.client_key:
        ctx.load_cert_chain(t.client_cert, t.client_key)
    return ctx
