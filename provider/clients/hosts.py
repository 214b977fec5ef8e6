"""GPU Docker hosts and pools as Airflow connections.

A **host** is a connection of type ``gpu_docker_host``:

* ``host``: the Docker engine URL, ``unix:///var/run/docker.sock`` or ``tcp://NAME:2376``;
* ``password``: the node agent's bearer token (optional);
* ``extra``: ``agent_url`` (``http://NAME:9400`` or ``https://NAME:9400``, optional),
  ``agent_ca_cert`` (the CA that signed an https agent's certificate; default: the system's
  trust store), ``labels`` (a JSON object such as ``{"zone": "a"}``), for TLS to the engine
  ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key`` (file paths on the worker) and
  ``tls_verify`` (default true), and ``insecure`` (default false).

A ``tcp://`` engine is spoken to over verified TLS only. The Engine API is root on the host,
and a pull sends the registry credentials in a header; in clear, anyone on the path could read
those and replay them. So a ``tcp://`` URL without TLS files, or with ``tls_verify`` false, is
refused unless the connection says ``"insecure": true`` (docs/security/transport.md).

``allow_root_user`` and ``allow_host_network`` (booleans, default false) let tasks run as root
or on the host's network there (docs/security/edge.md).

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
    """The engine's TLS files (paths on the worker); ``verify`` False skips checking the engine."""

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
    insecure: bool = False
    agent_ca_cert: str | None = None
    allow_root_user: bool = False
    """Tasks may run as root (``user=0``) on this host: the administrator's call, not a DAG's."""
    allow_host_network: bool = False
    """Tasks may use ``network_mode="host"`` on this host."""

    def __post_init__(self) -> None:
        """Refuse a ``tcp://`` engine without verified TLS unless ``insecure`` says so: checked
        here, so that no way of making a host (a connection, a trigger's kwargs, code) skips it."""
        if not self.docker_url.startswith("tcp://") or self.insecure:
            return
        if self.tls is None:
            cause = "has no TLS files, so it would be spoken to in clear"
        elif not self.tls.verify:
            cause = "has tls_verify false, so anyone on the path could pose as the engine"
        else:
            return
        raise HostConfigError(
            f"Connection {self.name!r}: the Docker URL {self.docker_url} {cause}. The Engine API is root on "
            "that host, and a pull sends the registry credentials in a header: whoever can read or "
            "intercept the traffic gets both. Fix: run dockerd with --tlsverify and give the connection's "
            "extra tls_ca_cert, tls_client_cert and tls_client_key (docs/transport.md, docs/deploy.md), or "
            "use unix:///var/run/docker.sock for this machine's engine. Only on a network where every "
            'machine is trusted, set "insecure": true in the extra to accept the risk.'
        )


def tls_failure_fix(host: HostConfig) -> str:
    """What to check when the TLS handshake with ``host``'s engine fails."""
    return (
        f"The TLS handshake failed: check that tls_ca_cert of connection {host.name!r} is the CA that "
        "signed the engine's certificate (dockerd --tlscert), and that tls_client_cert and "
        "tls_client_key are a client certificate signed by the CA the engine trusts (dockerd --tlscacert)."
    )


def local_host(name: str = DEFAULT_HOST_CONN_ID) -> HostConfig:
    """The engine of this machine, as Docker's own client would find it. A ``tcp://``
    ``DOCKER_HOST`` is refused like a connection without TLS files: define the connection
    ``gpu_docker_default`` with them instead."""
    try:
        return HostConfig(name=name, docker_url=os.environ.get("DOCKER_HOST") or LOCAL_DOCKER_URL)
    except HostConfigError as exc:
        raise HostConfigError(
            f"{exc} This URL comes from DOCKER_HOST, as no connection {name!r} is defined: define that "
            "connection (with its TLS files), or point DOCKER_HOST at a unix:// socket."
        ) from exc


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
    return HostConfig(
        name=conn.conn_id,
        docker_url=url,
        agent_url=_agent_url(conn.conn_id, extra),
        agent_token=conn.password or None,
        labels=MappingProxyType(dict(labels)),
        tls=_tls_files(conn.conn_id, extra),
        insecure=_flag(conn.conn_id, extra, "insecure", False),
        agent_ca_cert=_path(conn.conn_id, extra, "agent_ca_cert"),
        allow_root_user=_flag(conn.conn_id, extra, "allow_root_user", False),
        allow_host_network=_flag(conn.conn_id, extra, "allow_host_network", False),
    )


def _tls_files(conn_id: str, extra: Mapping[str, Any]) -> TlsFiles | None:
    """The engine's TLS files, or None when the extra names none. A client certificate
    without its key (or the reverse) is refused: the engine would refuse the handshake."""
    files = [_path(conn_id, extra, k) for k in ("tls_ca_cert", "tls_client_cert", "tls_client_key")]
    if not any(files):
        return None
    ca_cert, client_cert, client_key = files
    if bool(client_cert) != bool(client_key):
        raise HostConfigError(
            f"Connection {conn_id!r}: extra tls_client_cert and tls_client_key go together (a client "
            f"certificate and its private key); got only {'tls_client_cert' if client_cert else 'tls_client_key'}. "
            "Give both, or neither when the engine does not check clients."
        )
    return TlsFiles(ca_cert, client_cert, client_key, _flag(conn_id, extra, "tls_verify", True))


def _agent_url(conn_id: str, extra: Mapping[str, Any]) -> str | None:
    value = extra.get("agent_url") or None
    if value is not None and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
        raise HostConfigError(
            f"Connection {conn_id!r}: extra agent_url must be the node agent's URL, http://HOST:9400 or "
            f"https://HOST:9400 (with --tls-cert), got {value!r}."
        )
    return value


def _path(conn_id: str, extra: Mapping[str, Any], key: str) -> str | None:
    value = extra.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise HostConfigError(
            f"Connection {conn_id!r}: extra {key} must be the path of a PEM file on the worker, "
            f"e.g. \"/etc/gpu-docker/ca.pem\"; got {value!r}."
        )
    return value


def _flag(conn_id: str, extra: Mapping[str, Any], key: str, default: bool) -> bool:
    """A JSON boolean; a string such as ``"false"`` is refused rather than read as true."""
    value = extra.get(key)
    if value is None:  # absent, or left empty in the connection form
        return default
    if not isinstance(value, bool):
        raise HostConfigError(
            f"Connection {conn_id!r}: extra {key} must be true or false (a JSON boolean), got {value!r}."
        )
    return value


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
            default = get_connection(DEFAULT_HOST_CONN_ID)
        except Exception:  # noqa: BLE001 - an undefined default means "this machine"
            return [local_host()]
        return [host_from_connection(default)]  # a defined but refused default is an error, not this machine
    if isinstance(pool, str):
        conn = _lookup(pool, get_connection)
        if conn.conn_type == POOL_CONN_TYPE:
            ids = conn.extra_dejson.get("hosts")
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i.strip() for i in ids):
                raise HostConfigError(
                    f'Pool connection {pool!r}: extra must be {{"hosts": ["host_conn_id", ...]}} '
                    f"with at least one host; got {conn.extra_dejson!r}."
                )
            return [host_from_connection(_lookup(i, get_connection, f"pool connection {pool!r} (extra \"hosts\")"))
                    for i in ids]
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


def _lookup(conn_id: str, get_connection: Callable[[str], ConnectionLike], named_by: str | None = None) -> ConnectionLike:
    """The connection ``conn_id``; an undefined one is a :class:`HostConfigError` that says where
    it was named (``named_by``: a pool's hosts) and how to define it."""
    try:
        return get_connection(conn_id)
    except Exception as exc:
        where = f", named by {named_by}," if named_by else ""
        raise HostConfigError(
            f"Connection {conn_id!r}{where} is not defined ({exc}). Create it in the Airflow UI "
            f"(Admin > Connections, type 'GPU Docker host' or 'GPU Docker pool') or set "
            f"AIRFLOW_CONN_{conn_id.upper()}."
        ) from exc
