"""Host and pool connections."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.sdk import Connection

from provider.errors import HostConfigError
from provider import get_provider_info
from provider.clients.hosts import (
    LOCAL_DOCKER_URL,
    aresolve_pool,
    host_from_connection,
    resolve_pool,
)


def conn(conn_id: str, conn_type: str = "gpu_docker_host", host: str = "tcp://gpu-a:2376", **extra: Any) -> Connection:
    return Connection(conn_id=conn_id, conn_type=conn_type, host=host, password="tok", extra=json.dumps(extra))


CONNS = {
    "a": conn("a", agent_url="http://gpu-a:9400", labels={"zone": "east"}, insecure=True),
    "b": conn("b", host="unix:///run/b.sock", tls_ca_cert="/ca.pem", tls_client_cert="/c.pem", tls_client_key="/k.pem"),
    "pool": conn("pool", conn_type="gpu_docker_pool", host="", hosts=["a", "b"]),
    "empty_pool": conn("empty_pool", conn_type="gpu_docker_pool", host="", hosts=[]),
    "bad_url": conn("bad_url", host="gpu-a"),
    "bad_labels": conn("bad_labels", labels=["zone"]),
    "wrong_type": conn("wrong_type", conn_type="postgres"),
}


def get(conn_id: str) -> Connection:
    if conn_id not in CONNS:
        raise KeyError(f"The conn_id `{conn_id}` isn't defined")
    return CONNS[conn_id]


def test_host_from_connection_reads_every_field() -> None:
    a = host_from_connection(CONNS["a"])
    assert (a.name, a.docker_url, a.agent_url, a.agent_token, dict(a.labels)) == (
        "a", "tcp://gpu-a:2376", "http://gpu-a:9400", "tok", {"zone": "east"}
    )
    b = host_from_connection(CONNS["b"])
    assert b.tls is not None and (b.tls.ca_cert, b.tls.client_key, b.tls.verify) == ("/ca.pem", "/k.pem", True)
    assert "tok" not in repr(a)


@pytest.mark.parametrize(
    "pool, names",
    [
        pytest.param("pool", ["a", "b"], id="pool-connection"),
        pytest.param(["b", "a"], ["b", "a"], id="list-of-hosts"),
        pytest.param("a", ["a"], id="single-host"),
    ],
)
def test_resolve_pool(pool: Any, names: list[str]) -> None:
    assert [h.name for h in resolve_pool(pool, get)] == names


def test_undefined_default_host_is_the_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    [host] = resolve_pool(None, get)
    assert host.docker_url == LOCAL_DOCKER_URL


@pytest.mark.parametrize(
    "pool, message",
    [
        pytest.param("nope", "Connection 'nope' is not defined", id="unknown"),
        pytest.param(["a", "nope"], "AIRFLOW_CONN_NOPE", id="unknown-in-list"),
        pytest.param([], "empty list", id="empty-list"),
        pytest.param("empty_pool", "at least one host", id="empty-pool"),
        pytest.param("bad_url", "must be a Docker URL", id="bad-url"),
        pytest.param("bad_labels", "object of strings", id="bad-labels"),
        pytest.param("wrong_type", "needs type 'gpu_docker_host'", id="wrong-type"),
    ],
)
def test_resolve_pool_errors_say_how_to_fix(pool: Any, message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        resolve_pool(pool, get)


async def aget(conn_id: str) -> Connection:
    return get(conn_id)


@pytest.mark.parametrize(
    "pool",
    ["pool", ["b", "a"], "a", None, "nope", ["a", "nope"], [], "empty_pool", "bad_url", "bad_labels", "wrong_type"],
    ids=str,
)
def test_the_async_resolution_a_trigger_uses_gives_what_the_task_gets(pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The triggerer resolves the pool from its connection ids (``aresolve_pool``); every pool,
    good or broken, gives the same hosts or the same error as the task's own resolution."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)

    def outcome(resolve: Any) -> Any:
        try:
            return resolve()
        except HostConfigError as exc:
            return str(exc)

    sync = outcome(lambda: resolve_pool(pool, get))
    assert outcome(lambda: asyncio.run(aresolve_pool(pool, aget))) == sync


def test_provider_info_names_the_distribution() -> None:
    from importlib.metadata import entry_points

    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-gpu-docker"
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value == "provider:get_provider_info"]
    assert eps, "the apache_airflow_provider entry point is not installed"
    types = {c["connection-type"] for c in info["connection-types"]}
    assert "gpu_docker_host" in types
