"""GPU Docker hosts and pools as Airflow connections.

A **host** is a connection of type ``gpu_docker_host``:

* ``host``: the Docker engine URL, ``unix:///var/run/docker.sock`` or ``tcp://NAME:2376``;
* ``password``: the node agent's bearer token (optional);
* ``extra``: ``agent_url`` (``http://NAME:9400``, optional), ``labels`` (a JSON object such as
  ``{"zone": "a"}``), and for TLS ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key``
  (file paths on the worker) and ``tls_verify`` (default true).

A **pool** is a connection of type ``gpu_docker_pool`` whose extra lists its hosts:
``{"hosts": ["gpu_host_a", "gpu_host_b"]}``. Operators also take a plain list of host
connection ids. Both forms work with connections from the metadata database, a secrets
backend or ``AIRFLOW_CONN_*`` environment variables, because a task can only look
connections up by id.

Without any connection the default host ``gpu_docker_default`` is the local engine
(``DOCKER_HOST`` or ``unix:///var/run/docker.sock``), so the example pipeline runs on a
single machine with no set-up.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from provider.errors import HostConfigError

HOST_CONN_TYPE = "gpu_docker_host"
POOL_CONN_TYPE = "gpu_docker_pool"
DEFAULT_HOST_CONN_ID = "gpu_docker_default"
LOCAL_DOCKER_URL = "unix:///var/run/docker.sock"


class ConnectionLike(Protocol):
    """The part of an Airflow connection this module reads."""

    conn_id: str
    conn_type: str | None
    host: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Where one GPU host's Docker engine and node agent answer."""

    name: str
    docker_url: str
    agent_url: str | None = None
    agent_token: str | None = field(default=None, repr=False)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tls: TlsFiles | None = None


def tls_failure_fix(host: HostConfig) -> str:
    """What to check when the TLS handshake with ``host``'s engine fails."""
    return (
        f"The TLS handshake failed: check that tls_ca_cert of connection {host.name!r} is the CA that "
        "signed the engine's certificate (dockerd --tlscert), and that tls_client_cert and "
        "tls_client_key are a client certificate signed by the CA the engine trusts (dockerd --tlscacert)."
    )


def local_host(name: str = DEFAULT_HOST_CONN_ID) -> HostConfig:
    """The engine of this machine, as Docker's own client would find it."""
    return HostConfig(name=name, docker_url=os.environ.get("DOCKER_HOST") or LOCAL_DOCKER_URL)


def host_from_connection(conn: ConnectionLike) -> HostConfig:
    """Map a ``gpu_docker_host`` connection to a :class:`HostConfig`, checking every field."""
    if conn.conn_type not in (HOST_CONN_TYPE, None, ""):
        raise HostConfigError(
            f"Connection {conn.conn_id!r} has type {conn.conn_type!r}; a GPU host needs type "
            f"{HOST_CONN_TYPE!r}."
        )
    url = (conn.host or "").strip()
    if not url.startswith(("unix://", "tcp://")):
        raise HostConfigError(
            f"Connection {conn.conn_id!r}: host must be a Docker URL such as "
            f"unix:///var/run/docker.sock or tcp://NAME:2376, got {url!r}."
        )
    extra = conn.extra_dejson
    labels = extra.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise HostConfigError(
            f'Connection {conn.conn_id!r}: extra "labels" must be an object of strings, '
            f'e.g. {{"zone": "a"}}; got {labels!r}.'
        )
    tls = None
    if any(k in extra for k in ("tls_ca_cert", "tls_client_cert", "tls_client_key")):
        tls = TlsFiles(
            ca_cert=extra.get("tls_ca_cert"),
            client_cert=extra.get("tls_client_cert"),
            client_key=extra.get("tls_client_key"),
            verify=bool(extra.get("tls_verify", True)),
        )
    return HostConfig(
        name=conn.conn_id,
        docker_url=url,
        agent_url=(extra.get("agent_url") or None),
        agent_token=conn.password or None,
        labels=MappingProxyType(dict(labels)),
        tls=tls,
    )


def resolve_pool(
    pool: str | Sequence[str] | None,
    get_connection: Callable[[str], ConnectionLike],
) -> list[HostConfig]:
    """Expand a pool (pool connection id, host connection id, or list of host ids) to hosts.

    ``get_connection`` raises for an unknown id (Airflow's ``BaseHook.get_connection`` does);
    the default host id alone falls back to the local engine when it is not defined.
    """
    if pool is None or pool == DEFAULT_HOST_CONN_ID:
        try:
            return [host_from_connection(get_connection(DEFAULT_HOST_CONN_ID))]
        except Exception:  # noqa: BLE001 - an undefined default means "this machine"
            return [local_host()]
    if isinstance(pool, str):
        conn = _lookup(pool, get_connection)
        if conn.conn_type == POOL_CONN_TYPE:
            ids = conn.extra_dejson.get("hosts")
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise HostConfigError(
                    f'Pool connection {pool!r}: extra must be {{"hosts": ["host_conn_id", ...]}} '
                    f"with at least one host; got {conn.extra_dejson!r}."
                )
            return [host_from_connection(_lookup(i, get_connection)) for i in ids]
        return [host_from_connection(conn)]
    if not pool:
        raise HostConfigError("The pool is an empty list: name at least one host connection.")
    return [host_from_connection(_lookup(i, get_connection)) for i in pool]


def pool_extra(pool: str | Sequence[str] | None, get_connection: Callable[[str], ConnectionLike]) -> Mapping[str, Any]:
    """The extra of ``pool`` when it is a pool connection (where its queues are declared);
    empty for a host, a list of hosts or the default."""
    if not isinstance(pool, str) or pool == DEFAULT_HOST_CONN_ID:
        return {}
    conn = _lookup(pool, get_connection)
    return dict(conn.extra_dejson) if conn.conn_type == POOL_CONN_TYPE else {}


async def aresolve_pool(
    pool: str | Sequence[str] | None,
    aget_connection: Callable[[str], Awaitable[ConnectionLike]],
) -> list[HostConfig]:
    """:func:`resolve_pool` for an event loop (a trigger): the connections it needs are fetched
    with ``aget_connection`` first (a pool's, then its hosts'), then expanded by the same rules."""
    fetched: dict[str, ConnectionLike | Exception] = {}

    async def fetch(ids: Sequence[str]) -> None:
        for conn_id in ids:
            if conn_id not in fetched:
                try:
                    fetched[conn_id] = await aget_connection(conn_id)
                except Exception as exc:  # noqa: BLE001 - raised by the lookup below, as resolve_pool would
                    fetched[conn_id] = exc

    def lookup(conn_id: str) -> ConnectionLike:
        found = fetched[conn_id]
        if isinstance(found, Exception):
            raise found
        return found

    if pool is None or isinstance(pool, str):
        first = pool or DEFAULT_HOST_CONN_ID
        await fetch([first])
        conn = fetched[first]
        if not isinstance(conn, Exception) and conn.conn_type == POOL_CONN_TYPE:
            ids = conn.extra_dejson.get("hosts")
            await fetch([i for i in ids if isinstance(i, str)] if isinstance(ids, list) else [])
    else:
        await fetch(list(pool))
    return resolve_pool(pool, lookup)


def _lookup(conn_id: str, get_connection: Callable[[str], ConnectionLike]) -> ConnectionLike:
    try:
        return get_connection(conn_id)
    except Exception as exc:
        raise HostConfigError(
            f"Connection {conn_id!r} is not defined ({exc}). Create it in the Airflow UI "
            f"(Admin > Connections, type 'GPU Docker host' or 'GPU Docker pool') or set "
            f"AIRFLOW_CONN_{conn_id.upper()}."
        ) from exc
