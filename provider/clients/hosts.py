"""GPU Docker hosts and pools as Airflow connections.

A **host** is a connection of type ``gpu_docker_host``:

* ``host``: the Docker engine URL, ``unix:///var/run/docker.sock`` or ``tcp://NAME:2376``;
* ``password``: the node agent's bearer token (optional);
* ``extra``: ``agent_url`` (``http://NAME:9400``, optional), ``labels`` (a JSON object such as
  ``{"zone": "a"}``), and for TLS ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key``
  (file paths on the worker) and ``tls_verify`` (default true); ``allow_root_user`` and
  ``allow_host_network`` (booleans, default false) let tasks run as root or on the host's
  network there (docs/security/edge.md).

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
from collections.abc import Callable, Mapping, Sequence
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
    allow_root_user: bool = False
    """Tasks may run as root (``user=0``) on this host: the administrator's call, not a DAG's."""
    allow_host_network: bool = False
    """Tasks may use ``network_mode="host"`` on this host."""


HOST_PERMISSIONS = ("allow_root_user", "allow_host_network")


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
    for flag in HOST_PERMISSIONS:
        if extra.get(flag) is not None and not isinstance(extra[flag], bool):
            raise HostConfigError(
                f"Connection {conn.conn_id!r}: extra {flag!r} must be true or false (JSON booleans), got "
                f"{extra[flag]!r}; leave it out to refuse (the default)."
            )
    return HostConfig(
        name=conn.conn_id,
        docker_url=url,
        agent_url=(extra.get("agent_url") or None),
        agent_token=conn.password or None,
        labels=MappingProxyType(dict(labels)),
        tls=tls,
        allow_root_user=extra.get("allow_root_user") is True,
        allow_host_network=extra.get("allow_host_network") is True,
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


def _lookup(conn_id: str, get_connection: Callable[[str], ConnectionLike]) -> ConnectionLike:
    try:
        return get_connection(conn_id)
    except Exception as exc:
        raise HostConfigError(
            f"Connection {conn_id!r} is not defined ({exc}). Create it in the Airflow UI "
            f"(Admin > Connections, type 'GPU Docker host' or 'GPU Docker pool') or set "
            f"AIRFLOW_CONN_{conn_id.upper()}."
        ) from exc


def host_to_dict(host: HostConfig) -> dict[str, Any]:
    """A JSON-able form of ``host`` for a trigger's kwargs (Airflow stores them encrypted)."""
    return {
        "name": host.name,
        "docker_url": host.docker_url,
        "agent_url": host.agent_url,
        "agent_token": host.agent_token,
        "labels": dict(host.labels),
        "tls": None if host.tls is None else {
            "ca_cert": host.tls.ca_cert, "client_cert": host.tls.client_cert,
            "client_key": host.tls.client_key, "verify": host.tls.verify,
        },
        **{flag: getattr(host, flag) for flag in HOST_PERMISSIONS},
    }


def host_from_dict(doc: Mapping[str, Any]) -> HostConfig:
    """Inverse of :func:`host_to_dict`."""
    tls = doc.get("tls")
    return HostConfig(
        name=doc["name"],
        docker_url=doc["docker_url"],
        agent_url=doc.get("agent_url"),
        agent_token=doc.get("agent_token"),
        labels=MappingProxyType(dict(doc.get("labels") or {})),
        tls=None if tls is None else TlsFiles(**tls),
        **{flag: bool(doc.get(flag, False)) for flag in HOST_PERMISSIONS},
    )
